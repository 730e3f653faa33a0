package certs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/component-base/metrics/testutil"

	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/metrics"
	"github.com/skiffkube/skiff/internal/node"
	"github.com/skiffkube/skiff/internal/pki"
)

func TestStatusAndDue(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, tc := range []struct {
		left   time.Duration
		status string
		due    bool
		days   int
	}{
		{365 * day, StatusOK, false, 365},
		{pki.RenewBefore + time.Second, StatusOK, false, 90},
		{pki.RenewBefore, StatusOK, true, 90},
		{WarnWithin, StatusOK, true, 30},
		{WarnWithin - time.Second, StatusWarning, true, 29},
		{10 * day, StatusWarning, true, 10},
		{0, StatusExpired, true, 0},
		{-day - time.Second, StatusExpired, true, -2},
	} {
		notAfter := now.Add(tc.left)
		if got := StatusAt(notAfter, now); got != tc.status {
			t.Errorf("%v left: status %q, want %q", tc.left, got, tc.status)
		}
		if got := Due(notAfter, now); got != tc.due {
			t.Errorf("%v left: due %v, want %v", tc.left, got, tc.due)
		}
		if got := DaysLeft(notAfter, now); got != tc.days {
			t.Errorf("%v left: %d days, want %d", tc.left, got, tc.days)
		}
	}
	if pki.RenewBefore != 90*day {
		t.Errorf("RenewBefore is %v, want 90 days (K3s's)", pki.RenewBefore)
	}
}

// serverDir makes a server data dir with a node, as a start does.
func serverDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	l := controlplane.Layout{DataDir: dir}
	_, err := controlplane.EnsureCertificates(l, controlplane.CertInputs{
		ClusterDomain: "cluster.local", ServiceCIDR: "10.43.0.0/16", AdvertiseIP: net.ParseIP("10.0.0.5"),
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client, err := pki.LoadCA(l.ClientCA().Cert, l.ClientCA().Key)
	if err != nil {
		t.Fatal(err)
	}
	server, err := pki.LoadCA(l.ServerCA().Cert, l.ServerCA().Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.EnsureCertificates(node.Layout{DataDir: dir}, node.CAs{Client: client, Server: server},
		node.Identity{NodeName: "n1", NodeIPs: []net.IP{net.ParseIP("10.0.0.5")}}, "https://127.0.0.1:6443", time.Now()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// forge replaces the leaf e with one that has the same subject, SANs, usages
// and key, signed by its CA, that expires at notAfter.
func forge(t *testing.T, e Entry, notAfter time.Time) {
	t.Helper()
	ca, err := pki.LoadCA(e.CACert, e.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	old, err := pki.ReadCert(e.Cert)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: old.Subject.CommonName, Organization: old.Subject.Organization},
		NotBefore:    notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter,
		KeyUsage: old.KeyUsage, ExtKeyUsage: old.ExtKeyUsage, BasicConstraintsValid: true,
		DNSNames: old.DNSNames, IPAddresses: old.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, old.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

func entryOf(t *testing.T, dir, base string) Entry {
	t.Helper()
	entries, err := Inventory(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if filepath.Base(e.Cert) == base {
			return e
		}
	}
	t.Fatalf("%s not in the inventory", base)
	return Entry{}
}

func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		out[p] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInventoryAndCheck(t *testing.T) {
	dir := serverDir(t)
	entries, err := Inventory(dir)
	if err != nil {
		t.Fatal(err)
	}
	var cas, leaves int
	for _, e := range entries {
		if e.IsCA {
			cas++
			continue
		}
		leaves++
		if e.CAKey == "" || e.Service == "" {
			t.Errorf("server leaf %s: no CA key or service: %+v", e.Cert, e)
		}
	}
	// server, client, request-header CAs and the node's two bundles; six
	// control-plane leaves and the node's three (no etcd: not made here).
	if cas != 5 || leaves != 9 {
		t.Errorf("%d CAs and %d leaves, want 5 and 9: %+v", cas, leaves, entries)
	}
	infos, err := Check(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range infos {
		if i.Status != StatusOK || i.Error != "" || i.Subject == "" || i.Issuer == "" || i.DaysLeft < 364 {
			t.Errorf("fresh certificate reported as %+v", i)
		}
		if strings.HasSuffix(i.File, "serving-kube-apiserver.crt") && !strings.Contains(strings.Join(i.SANs, ","), "10.43.0.1") {
			t.Errorf("apiserver SANs %v lack the service IP", i.SANs)
		}
	}
	forge(t, entryOf(t, dir, "client-admin.crt"), time.Now().Add(10*24*time.Hour))
	infos, _ = Check(dir, time.Now())
	for _, i := range infos {
		if strings.HasSuffix(i.File, "client-admin.crt") && (i.Status != StatusWarning || i.DaysLeft != 9) {
			t.Errorf("forged certificate reported as %+v", i)
		}
	}
	if _, err := Check(t.TempDir(), time.Now()); err == nil || !strings.Contains(err.Error(), "no certificates") {
		t.Errorf("empty dir: %v", err)
	}
}

func TestRotate(t *testing.T) {
	dir := serverDir(t)
	before := snapshot(t, dir)
	// Refused before anything is written.
	if _, err := Rotate(dir, []string{"kubelet,bogus"}, time.Now()); err == nil || !strings.Contains(err.Error(), `"bogus"`) {
		t.Fatalf("unknown service: %v", err)
	}
	if _, err := Rotate(dir, []string{"etcd"}, time.Now()); err == nil || !strings.Contains(err.Error(), "no such certificate") {
		t.Fatalf("etcd without etcd: %v", err)
	}
	if after := snapshot(t, dir); len(after) != len(before) {
		t.Fatal("a refused rotate changed files")
	} else {
		for p, data := range before {
			if !bytes.Equal(after[p], data) {
				t.Fatalf("a refused rotate changed %s", p)
			}
		}
	}

	done, err := Rotate(dir, []string{"kubelet", "supervisor"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range done {
		names = append(names, filepath.Base(r.Entry.Cert))
	}
	if got := strings.Join(names, " "); got != "serving-kube-apiserver.crt client-kubelet.crt serving-kubelet.crt" {
		t.Fatalf("rotated %s", got)
	}
	after := snapshot(t, dir)
	for p, data := range before {
		changed := !bytes.Equal(after[p], data)
		want := false
		for _, r := range done {
			want = want || p == r.Entry.Cert
		}
		if changed != want {
			t.Errorf("%s: changed %v, want %v", p, changed, want)
		}
	}
	for _, r := range done {
		oldCert, _ := pki.ReadCert(r.Entry.Cert) // now the new one
		old := mustParse(t, before[r.Entry.Cert])
		if oldCert.SerialNumber.Cmp(old.SerialNumber) == 0 || oldCert.Subject.String() != old.Subject.String() ||
			strings.Join(oldCert.DNSNames, ",") != strings.Join(old.DNSNames, ",") || len(oldCert.IPAddresses) != len(old.IPAddresses) {
			t.Errorf("%s: re-issued as %v / %v, was %v / %v", r.Entry.Cert, oldCert.Subject, oldCert.DNSNames, old.Subject, old.DNSNames)
		}
		if _, err := tlsPair(r.Entry); err != nil {
			t.Errorf("%s: %v", r.Entry.Cert, err)
		}
	}
}

func TestRotateAgentRefused(t *testing.T) {
	dir := serverDir(t)
	// An agent's data dir: the node's files without the server's.
	if err := os.RemoveAll(filepath.Join(dir, "server")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	if _, err := Rotate(dir, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "not on this machine") {
		t.Fatalf("agent rotate: %v", err)
	}
	for p, data := range before {
		if cur, _ := os.ReadFile(p); !bytes.Equal(cur, data) {
			t.Errorf("refused rotate changed %s", p)
		}
	}
}

func TestPassRenewsDueLeaves(t *testing.T) {
	dir := serverDir(t)
	admin := entryOf(t, dir, "client-admin.crt")
	forge(t, admin, time.Now().Add(10*24*time.Hour))
	kubelet := entryOf(t, dir, "serving-kubelet.crt")
	forge(t, kubelet, time.Now().Add(-time.Hour)) // expired
	var renewedFiles []string
	r := NewRenewer(RenewerConfig{DataDir: dir, OnRenewed: func(f []string) { renewedFiles = f }}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Now()
	next := r.Pass(context.Background(), now)
	if len(renewedFiles) != 2 {
		t.Fatalf("renewed %v, want the admin and kubelet serving certificates", renewedFiles)
	}
	for _, e := range []Entry{admin, kubelet} {
		c, err := pki.ReadCert(e.Cert)
		if err != nil {
			t.Fatal(err)
		}
		if DaysLeft(c.NotAfter, now) < 364 {
			t.Errorf("%s: %d days left after renewal", e.Cert, DaysLeft(c.NotAfter, now))
		}
		if _, err := tlsPair(e); err != nil {
			t.Errorf("%s: %v", e.Cert, err)
		}
	}
	// The next check is when the first leaf is due: all are a year away.
	if d := next.Sub(now); d != time.Hour {
		t.Errorf("next check in %v, want the period (1h): every leaf is due in ~275 days", d)
	}
	// One leaf due in 2 hours: the next check is then, not at the period.
	r2 := NewRenewer(RenewerConfig{DataDir: dir, Period: 1000 * time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	soon := now.Add(pki.RenewBefore + 2*time.Hour)
	forge(t, entryOf(t, dir, "client-scheduler.crt"), soon)
	c, _ := pki.ReadCert(entryOf(t, dir, "client-scheduler.crt").Cert)
	if next := r2.Pass(context.Background(), now); !next.Equal(RenewAt(c.NotAfter)) {
		t.Errorf("next check %v, want %v", next, RenewAt(c.NotAfter))
	}
	// A second pass finds nothing to do.
	renewedFiles = nil
	r.Pass(context.Background(), now)
	if len(renewedFiles) != 0 {
		t.Errorf("second pass renewed %v", renewedFiles)
	}
}

func TestPassAsksTheServerForAnAgentsLeaves(t *testing.T) {
	dir := serverDir(t)
	kubelet := entryOf(t, dir, "client-kubelet.crt")
	forge(t, kubelet, time.Now().Add(10*24*time.Hour))
	ca, _ := pki.LoadCA(kubelet.CACert, kubelet.CAKey)
	if err := os.RemoveAll(filepath.Join(dir, "server")); err != nil {
		t.Fatal(err)
	}
	calls := 0
	r := NewRenewer(RenewerConfig{DataDir: dir, Remote: func(context.Context) error {
		calls++
		// What a join answer writes: a new pair.
		certPEM, keyPEM, err := ca.IssueLeaf(pki.NodeClientSpec("n1"), time.Now())
		if err != nil {
			return err
		}
		if err := os.WriteFile(kubelet.Key, keyPEM, 0o600); err != nil {
			return err
		}
		return os.WriteFile(kubelet.Cert, certPEM, 0o644)
	}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.Pass(context.Background(), time.Now())
	if calls != 1 {
		t.Fatalf("Remote called %d times, want 1", calls)
	}
	c, _ := pki.ReadCert(kubelet.Cert)
	if DaysLeft(c.NotAfter, time.Now()) < 364 {
		t.Error("not renewed")
	}
	r.Pass(context.Background(), time.Now())
	if calls != 1 {
		t.Errorf("Remote called again with nothing due")
	}
}

func mustParse(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tlsPair checks that the certificate and key of e still belong together.
func tlsPair(e Entry) (*pki.KeyPairReloader, error) { return pki.NewKeyPairReloader(e.Cert, e.Key) }

func TestPassWarnsOnTheNode(t *testing.T) {
	dir := serverDir(t)
	kubelet := entryOf(t, dir, "client-kube-proxy.crt")
	forge(t, kubelet, time.Now().Add(10*24*time.Hour))
	// An agent without a way to renew: the certificate stays, and is
	// reported once.
	if err := os.RemoveAll(filepath.Join(dir, "server")); err != nil {
		t.Fatal(err)
	}
	client := fake.NewSimpleClientset()
	r := NewRenewer(RenewerConfig{DataDir: dir, NodeName: "n1", Client: client}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := r.Init(context.Background()); err != nil { // registers the metrics
		t.Fatal(err)
	}
	now := time.Now()
	r.Pass(context.Background(), now)
	r.Pass(context.Background(), now.Add(time.Minute))
	events, err := client.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events.Items) != 1 {
		t.Fatalf("%d events, want 1: %+v", len(events.Items), events.Items)
	}
	ev := events.Items[0]
	if ev.Type != corev1.EventTypeWarning || ev.Reason != ExpiringReason || ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != "n1" ||
		!strings.Contains(ev.Message, kubelet.Cert) || !strings.Contains(ev.Message, "expires in 9 days") {
		t.Errorf("event %+v", ev)
	}
	if got, err := testutil.GetGaugeMetricValue(metrics.CertificateExpirationTimestamp.WithLabelValues(kubelet.Cert)); err != nil || got != float64(notAfterOf(t, kubelet.Cert).Unix()) {
		t.Errorf("expiry metric %v, %v", got, err)
	}
}

func notAfterOf(t *testing.T, path string) time.Time {
	t.Helper()
	c, err := pki.ReadCert(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.NotAfter
}

// Out of inotify instances, the renewal still starts: one warning, and the
// timer renews.
func TestStartWithoutAWatch(t *testing.T) {
	dir := serverDir(t)
	admin := entryOf(t, dir, "client-admin.crt")
	forge(t, admin, time.Now().Add(-time.Hour))
	saved := newWatcher
	newWatcher = func() (*fsnotify.Watcher, error) { return nil, syscall.EMFILE }
	t.Cleanup(func() { newWatcher = saved })
	var logs syncBuffer
	renewed := make(chan []string, 1)
	r := NewRenewer(RenewerConfig{DataDir: dir, OnRenewed: func(f []string) {
		select {
		case renewed <- f:
		default:
		}
	}}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start without inotify: %v", err)
	}
	defer r.Stop()
	if f := <-renewed; len(f) != 1 || f[0] != admin.Cert {
		t.Errorf("renewed %v, want %s", f, admin.Cert)
	}
	if n := strings.Count(logs.String(), "level=WARN msg=\"cannot watch the TLS directories"); n != 1 {
		t.Errorf("%d watch warnings, want 1:\n%s", n, logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
