package e2e

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/skiffkube/skiff/internal/pki"
	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// etcdTLS are the files of an external etcd that requires client
// certificates: its CA, and a client certificate and key it accepts.
type etcdTLS struct{ CA, Cert, Key string }

// startExternalEtcd runs etcd (its embed package, in the test process) as
// an external datastore on https://ip:<free port>, requiring client
// certificates from its own CA; stopped at cleanup.
func startExternalEtcd(t *testing.T, ip net.IP) (endpoint string, files etcdTLS) {
	t.Helper()
	dir := t.TempDir()
	ca, _, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "e2e-etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, _, err := ca.EnsureLeaf(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"),
		pki.LeafSpec{CommonName: "etcd", IPs: []net.IP{ip}, Usage: pki.ServerAuth}, now); err != nil {
		t.Fatal(err)
	}
	files = etcdTLS{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "client.crt"), Key: filepath.Join(dir, "client.key")}
	if _, _, err := ca.EnsureLeaf(files.Cert, files.Key, pki.LeafSpec{CommonName: "skiff", Usage: pki.ClientAuth}, now); err != nil {
		t.Fatal(err)
	}
	free := func(host string) int {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	client := url.URL{Scheme: "https", Host: net.JoinHostPort(ip.String(), strconv.Itoa(free(ip.String())))}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(free("127.0.0.1")))}
	cfg := embed.NewConfig()
	cfg.Name = "e2e"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo.CertFile = filepath.Join(dir, "server.crt")
	cfg.ClientTLSInfo.KeyFile = filepath.Join(dir, "server.key")
	cfg.ClientTLSInfo.TrustedCAFile = files.CA
	cfg.ClientTLSInfo.ClientCertAuth = true
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatal(err)
	case <-time.After(time.Minute):
		t.Fatal("external etcd not ready after 1m")
	}
	return client.String(), files
}

// TestExternalEtcd is TestExternalDatastore's scenario on an external etcd
// over https that requires client certificates (--datastore-cafile,
// --datastore-certfile, --datastore-keyfile): kine passes it through and
// the apiserver talks to it with the same files.
func TestExternalEtcd(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("sketc", "10.83.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	endpoint, files := startExternalEtcd(t, nw.Gateway)
	if _, err := os.Stat(files.Key); err != nil {
		t.Fatal(err)
	}
	testServersOnOneDatastore(t, nw, endpoint,
		"--datastore-cafile", files.CA, "--datastore-certfile", files.Cert, "--datastore-keyfile", files.Key)
}
