package snapshot

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestProbeCountsOnlyThisClustersMembers: a TLS URL counts as a member up
// only when its certificate verifies against the CA given; a port that
// accepts connections, another CA's server or an http server that is not
// etcd do not.
func TestProbeCountsOnlyThisClustersMembers(t *testing.T) {
	ctx := context.Background()
	ours := httptest.NewTLSServer(http.NotFoundHandler())
	defer ours.Close()
	// httptest's servers share one certificate: the other CA's is made here.
	theirs := httptest.NewUnstartedServer(http.NotFoundHandler())
	theirs.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	theirs.StartTLS()
	defer theirs.Close()
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ours.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	accepter, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer accepter.Close()
	go func() {
		for {
			c, err := accepter.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	notEtcd := httptest.NewServer(http.NotFoundHandler())
	defer notEtcd.Close()
	etcdLike := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/version" {
			w.Write([]byte(`{"etcdserver":"3.7.3","etcdcluster":"3.7.0"}`))
		}
	}))
	defer etcdLike.Close()

	members := []Member{
		{Name: "ours-client", ClientURLs: []string{ours.URL}},
		{Name: "ours-peer", PeerURLs: []string{ours.URL}},
		{Name: "other-ca", ClientURLs: []string{theirs.URL}},
		{Name: "accepts", ClientURLs: []string{"https://" + accepter.Addr().String()}, PeerURLs: []string{"http://" + accepter.Addr().String()}},
		{Name: "not-etcd", ClientURLs: []string{notEtcd.URL}},
		{Name: "http-etcd", ClientURLs: []string{etcdLike.URL}},
	}
	up := MembersUp(ctx, members, ProbeCAs{ServerCAFile: caFile, PeerCAFile: caFile})
	want := []string{"ours-client at " + ours.URL, "ours-peer at " + ours.URL, "http-etcd at " + etcdLike.URL}
	if len(up) != len(want) {
		t.Fatalf("MembersUp = %v, want %v", up, want)
	}
	for i := range want {
		if up[i] != want[i] {
			t.Errorf("MembersUp[%d] = %q, want %q", i, up[i], want[i])
		}
	}
	// The peer CA is what verifies a peer URL.
	if up := MembersUp(ctx, members[1:2], ProbeCAs{ServerCAFile: caFile, PeerCAFile: "/nonexistent"}); len(up) != 0 {
		t.Errorf("a peer URL verified against the server CA: %v", up)
	}
}

// selfSigned is a CA certificate of its own for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other etcd CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
