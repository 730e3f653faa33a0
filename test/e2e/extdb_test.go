package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// testDatabase returns the base URL of a database server the tests may
// create and drop databases on, from env: skipped when unset, except under
// CI (CI=true), where an unset variable fails the test: CI provides both
// servers (.ci/run), so a skip there would hide a broken setup.
func testDatabase(t *testing.T, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set, and CI must not skip this test: .ci/run starts the database and sets it", env)
	}
	t.Skipf("%s is not set: no database server to test against (.ci/run shows how CI provides one)", env)
	return ""
}

// externalDB is one test database on a PostgreSQL or MySQL/MariaDB server.
type externalDB struct {
	kind string // "postgres" or "mysql"
	// base is the server's URL as the test's environment gives it.
	base string
	name string
}

// recreate drops the test's database, so that a rerun starts clean; kine
// creates it again when the first server opens it.
func (d externalDB) recreate(t *testing.T) {
	t.Helper()
	var driver, dsn, stmt string
	switch d.kind {
	case "postgres":
		driver, dsn = "pgx", d.base
		stmt = "DROP DATABASE IF EXISTS " + d.name + " WITH (FORCE)"
	case "mysql":
		driver, dsn = "mysql", strings.TrimPrefix(d.base, "mysql://")
		stmt = "DROP DATABASE IF EXISTS " + d.name
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("%s: %v", d.kind, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		t.Fatalf("%s: %s: %v", d.kind, stmt, err)
	}
}

// endpoint is the --datastore-endpoint of the test's database as a server
// at host reaches it: a loopback address of the base URL becomes host (the
// servers run in network namespaces), the database is the test's.
func (d externalDB) endpoint(t *testing.T, host string) string {
	t.Helper()
	switch d.kind {
	case "postgres":
		u, err := url.Parse(d.base)
		if err != nil {
			t.Fatalf("%s: not a URL", "SKIFF_TEST_POSTGRES")
		}
		if isLoopback(u.Hostname()) {
			u.Host = net.JoinHostPort(host, portOr(u.Port(), "5432"))
		}
		u.Path = "/" + d.name
		return u.String()
	default:
		// mysql://user:pass@tcp(host:port)/db?params
		before, rest, ok := strings.Cut(d.base, "tcp(")
		addr, after, ok2 := strings.Cut(rest, ")")
		if !ok || !ok2 {
			t.Fatalf("SKIFF_TEST_MYSQL: want mysql://user:pass@tcp(host:port)/")
		}
		if h, p, err := net.SplitHostPort(addr); err == nil && isLoopback(h) {
			addr = net.JoinHostPort(host, p)
		}
		_, params, _ := strings.Cut(after, "?")
		ep := before + "tcp(" + addr + ")/" + d.name
		if params != "" {
			ep += "?" + params
		}
		return ep
	}
}

func isLoopback(h string) bool {
	ip := net.ParseIP(h)
	return h == "localhost" || ip != nil && ip.IsLoopback()
}

func portOr(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

// TestExternalDatastore runs two servers, each in its own network and mount
// namespaces and each with its node, on one PostgreSQL database, then two
// on one MariaDB (MySQL) database: the second server takes the first's CAs
// from the datastore; the controller-manager and the scheduler
// leader-elect; an object written through one is read through the
// other; with one stopped, the other goes on; the stopped one starts again
// on its data dir. A server with another token is refused with one clear
// line and writes no bootstrap file; one with another --service-cidr is
// refused naming both values.
func TestExternalDatastore(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	for _, tc := range []struct {
		kind, env, prefix, gateway string
	}{
		{"postgres", "SKIFF_TEST_POSTGRES", "skpg", "10.81.0.1/24"},
		{"mysql", "SKIFF_TEST_MYSQL", "skmy", "10.82.0.1/24"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			db := externalDB{kind: tc.kind, base: testDatabase(t, tc.env), name: "skiff_e2e_" + tc.kind}
			db.recreate(t)
			nw, err := multinode.NewNetwork(tc.prefix, tc.gateway)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nw.Cleanup)
			testServersOnOneDatastore(t, nw, db.endpoint(t, nw.Gateway.String()))
		})
	}
}

// testServersOnOneDatastore is the scenario of two servers on one external
// datastore; extra are the flags every server gets besides
// --datastore-endpoint.
func testServersOnOneDatastore(t *testing.T, nw *multinode.Network, endpoint string, extra ...string) {
	// Short: kine's socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "sk-extdb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	addNode := func(name string) *multinode.Node {
		t.Helper()
		nd, err := nw.AddNode(name, filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return nd
	}
	n1, n2, n3, n4 := addNode("srv1"), addNode("srv2"), addNode("srv3"), addNode("srv4")
	ds := append([]string{"--datastore-endpoint", endpoint}, extra...)
	with := func(args ...string) []string { return append(slices.Clone(ds), args...) }

	// The first server generates the token, as a lone server would.
	s1 := startNSServer(t, n1, ds...)
	if !strings.Contains(s1.Output(), "stored the cluster's bootstrap data in the datastore") {
		t.Fatalf("first server did not store the bootstrap data:\n%s", s1.Output())
	}
	tok := readToken(t, n1.DataDir())
	aloneUntil := time.Now()
	s2 := startNSServer(t, n2, with("--token", tok)...)
	if !strings.Contains(s2.Output(), "took the cluster's bootstrap data from the datastore") {
		t.Fatalf("second server did not take the bootstrap data:\n%s", s2.Output())
	}
	for _, f := range []string{"server/tls/server-ca.crt", "server/tls/client-ca.crt", "server/tls/service.key", "server/token"} {
		a := readFile(t, filepath.Join(n1.DataDir(), f))
		if b := readFile(t, filepath.Join(n2.DataDir(), f)); !bytes.Equal(a, b) {
			t.Errorf("%s differs between the two servers", f)
		}
	}
	for _, s := range []string{s1.Output(), s2.Output()} {
		if pw := passwordOf(endpoint); pw != "" && strings.Contains(s, pw) {
			t.Fatalf("the datastore password appears in a server's output:\n%s", s)
		}
	}

	c1, c2 := s1.Client(), s2.Client()
	ctx := context.Background()
	// Both nodes are one cluster's, whichever server is asked.
	for _, c := range []kubernetes.Interface{c1, c2} {
		eventually(t, 2*time.Minute, func() (string, error) {
			for _, name := range []string{"srv1", "srv2"} {
				n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return "", err
				}
				if !nodeReady(n) {
					return name + " not Ready", errNotYet
				}
			}
			return "", nil
		})
	}
	writeThenRead := func(from, to kubernetes.Interface, name string) {
		t.Helper()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"written": name}}
		if _, err := from.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() (string, error) {
			got, err := to.CoreV1().ConfigMaps("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			if got.Data["written"] != name {
				return fmt.Sprint(got.Data), errNotYet
			}
			return "", nil
		})
	}
	// On a datastore several servers share, the controller-manager and the
	// scheduler leader-elect: one Lease each, held by one of the servers.
	eventually(t, time.Minute, func() (string, error) {
		for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
			l, err := c2.CoordinationV1().Leases("kube-system").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
				return name + " has no holder", errNotYet
			}
		}
		return "", nil
	})
	writeThenRead(c1, c2, "through-srv1")
	writeThenRead(c2, c1, "through-srv2")

	// Another token: refused before writing anything.
	out := runNSServerToExit(t, n3, 2*time.Minute, with("--token", "another-cluster-secret", "--disable-agent")...)
	if !strings.Contains(out, "the datastore holds a cluster with another token") {
		t.Fatalf("another token: no clear refusal:\n%s", out)
	}
	t.Logf("another token:\n%s", out)
	assertNoBootstrapFiles(t, n3.DataDir())

	// Another service CIDR: refused naming the flag and both values.
	out = runNSServerToExit(t, n4, 2*time.Minute, with("--token", tok, "--disable-agent",
		"--service-cidr", "10.99.0.0/16", "--cluster-dns", "10.99.0.10")...)
	if !strings.Contains(out, `--service-cidr: this server has "10.99.0.0/16", the cluster has "10.43.0.0/16"`) {
		t.Fatalf("another service CIDR: no refusal naming both values:\n%s", out)
	}
	t.Logf("another service CIDR:\n%s", out)
	assertNoBootstrapFiles(t, n4.DataDir())

	// One server stopped (the leader, releasing its Leases to the other):
	// the other goes on, then the first comes back on its data dir and sees
	// what was written meanwhile.
	stopLeaderReleasesLeases(t, s1, c2, aloneUntil)
	writeThenRead(c2, c2, "while-srv1-is-down")
	s1.Restart()
	writeThenRead(c2, s1.Client(), "after-srv1-is-back")
}

// assertNoBootstrapFiles fails if a refused server left any CA, key or
// token in its data dir.
func assertNoBootstrapFiles(t *testing.T, dataDir string) {
	t.Helper()
	for _, f := range []string{"server/tls", "server/token", "server/cred"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err == nil {
			t.Errorf("refused server wrote %s", f)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// passwordOf is the password in a datastore URL, "" when none.
func passwordOf(endpoint string) string {
	_, rest, _ := strings.Cut(endpoint, "://")
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}

// TestUnreachableDatastore starts a server on a PostgreSQL endpoint where
// nothing listens: it retries with one line per attempt naming the
// endpoint without its password and what failed, writes no bootstrap file
// meanwhile, and stops on SIGTERM.
func TestUnreachableDatastore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	endpoint := fmt.Sprintf("postgres://skiff:hunter2-secret@127.0.0.1:%d/skiff", port)
	s := newServer(t, "--datastore-endpoint", endpoint, "--token", "some-cluster-secret")
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	// Two attempts, so the line repeats rather than being a one-off.
	if err := s.waitFor("attempt=2", time.Minute); err != nil {
		t.Fatal(err)
	}
	out := s.Output()
	if strings.Contains(out, "hunter2-secret") {
		t.Fatalf("the password appears in the output:\n%s", out)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "datastore unreachable") {
			lines = append(lines, l)
		}
	}
	if len(lines) < 2 || !strings.Contains(lines[0], "skiff:xxxxx@127.0.0.1") || !strings.Contains(lines[0], "connection refused") {
		t.Fatalf("want one line per attempt naming the redacted endpoint and the error; output:\n%s", out)
	}
	assertNoBootstrapFiles(t, s.DataDir)
	// A signal ends the wait (as any start-up interrupted: exit status 1,
	// saying what it was waiting for).
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("still waiting for the datastore 30s after SIGTERM:\n%s", s.Output())
	}
	if !strings.Contains(s.Output(), "waiting for postgres datastore postgres://skiff:xxxxx@127.0.0.1") {
		t.Fatalf("the exit does not say what it was waiting for:\n%s", s.Output())
	}
	assertNoBootstrapFiles(t, s.DataDir)
}
