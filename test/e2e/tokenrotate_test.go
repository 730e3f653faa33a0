package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffkube/skiff/test/e2e/multinode"
)

// TestTokenRotate rotates the server token of a server with an agent that
// joined with the old token: a malformed --new-token is refused naming the
// flag and changes nothing; after the rotation a new agent with the old
// token is refused with a clear error and one with the new token joins; the
// old agent restarts on the same data dir, still given the old token, and
// its node is Ready again; the server, restarted with its --token still the
// old one, starts on the new one and says to update the flag.
func TestTokenRotate(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if testing.Short() {
		t.Skip("token rotation: root end-to-end test")
	}
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("sktok", "10.93.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	gw := nw.Gateway.String()

	const oldSecret = "the-old-cluster-secret"
	s := newServer(t, "--advertise-address", gw, "--token", oldSecret)
	s.Start()
	oldTok := readToken(t, s.DataDir)
	serverURL := "https://" + net.JoinHostPort(gw, strconv.Itoa(s.Port))
	ctx := context.Background()
	c := s.Client()
	nodeReadyEventually := func(name string) {
		t.Helper()
		eventually(t, 2*time.Minute, func() (string, error) {
			n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return "", err
			}
			if !nodeReady(n) {
				return name + " not Ready", errNotYet
			}
			return "", nil
		})
	}
	addNode := func(name string) *multinode.Node {
		t.Helper()
		nd, err := nw.AddNode(name, filepath.Join(t.TempDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		return nd
	}

	old := addNode("old-agent")
	a := startNSAgent(t, old, "--server", serverURL, "--token", oldTok)
	a.waitFor(t, "skiff agent ready in", 3*time.Minute)
	nodeReadyEventually("old-agent")

	rotate := func(newToken string) (string, error) {
		return runToExit(t, time.Minute, "token", "rotate", "--server", s.URL(), "--data-dir", s.DataDir, "--new-token", newToken)
	}

	// A new token that does not parse: one line naming the flag, nothing
	// changed.
	out, err := rotate("not a token")
	if err == nil || !strings.Contains(out, "--new-token") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("malformed --new-token: %v, want one line naming the flag:\n%s", err, out)
	}
	if got := readToken(t, s.DataDir); got != oldTok {
		t.Fatal("a refused rotation changed server/token")
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "server", "token-retired")); !os.IsNotExist(err) {
		t.Fatalf("a refused rotation wrote server/token-retired: %v", err)
	}

	out, err = rotate("the-new-cluster-secret")
	if err != nil {
		t.Fatalf("token rotate: %v\n%s", err, out)
	}
	newTok := readToken(t, s.DataDir)
	if !strings.HasSuffix(newTok, "::server:the-new-cluster-secret") || !strings.Contains(out, newTok) {
		t.Fatalf("after the rotation server/token is %q; the command printed:\n%s", newTok, out)
	}
	if !strings.Contains(out, "update --token") {
		t.Errorf("the command does not say to update --token:\n%s", out)
	}

	// New joins: the old token is refused, the new one joins.
	fresh := addNode("new-agent")
	out = runNSAgentToExit(t, fresh, "--server", serverURL, "--token", oldTok)
	if !strings.Contains(out, "token not accepted") {
		t.Fatalf("a new agent with the old token: no clear refusal:\n%s", out)
	}
	b := startNSAgent(t, fresh, "--server", serverURL, "--token", newTok)
	b.waitFor(t, "skiff agent ready in", 3*time.Minute)
	nodeReadyEventually("new-agent")

	// The old agent restarts with the old token in its config: it comes
	// back on its node certificate.
	_ = a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the old agent did not stop 30s after SIGINT")
	}
	a2 := startNSAgent(t, old, "--server", serverURL, "--token", oldTok)
	a2.waitFor(t, "skiff agent ready in", 3*time.Minute)
	nodeReadyEventually("old-agent")
	if !strings.Contains(s.Output(), "node certificate") {
		t.Errorf("the server did not log the old agent's rejoin with its node certificate:\n%s", s.Output())
	}

	// The server restarts with --token still the old one: it runs on the
	// new token and says to update the flag.
	s.Stop()
	s.Start()
	if !strings.Contains(s.Output(), "skiff token rotate") {
		t.Errorf("the restarted server does not say its --token was rotated away:\n%s", s.Output())
	}
	if got := readToken(t, s.DataDir); got != newTok {
		t.Fatalf("after the restart server/token is %q, want the new token", got)
	}
	out = runNSAgentToExit(t, addNode("late-agent"), "--server", serverURL, "--token", oldTok)
	if !strings.Contains(out, "token not accepted") {
		t.Fatalf("after the server restart, an agent with the old token: no clear refusal:\n%s", out)
	}
}

// TestTokenRotateEmbeddedEtcd rotates the token on one of two servers on
// embedded etcd: the other takes the new token from the datastore without
// a restart and refuses a server joining with the old one; restarted with
// its --token still the old one, it starts on the new one.
func TestTokenRotateEmbeddedEtcd(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if testing.Short() {
		t.Skip("token rotation: root end-to-end test")
	}
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("sktoke", "10.94.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	nodes := map[string]*multinode.Node{}
	for _, name := range []string{"s1", "s2", "s3"} {
		nd, err := nw.AddNode(name, filepath.Join(t.TempDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		nodes[name] = nd
	}
	light := append([]string{"--disable-agent"}, serverLightArgs...)
	s1 := startNSServer(t, nodes["s1"], append([]string{"--cluster-init"}, light...)...)
	oldTok := readToken(t, s1.DataDir())
	s2 := startNSServer(t, nodes["s2"], append([]string{"--server", s1.URL(), "--token", oldTok}, light...)...)

	out, err := runToExit(t, time.Minute, "token", "rotate", "--server", s1.URL(), "--data-dir", s1.DataDir(), "--new-token", "rotated-on-s1")
	if err != nil {
		t.Fatalf("token rotate: %v\n%s", err, out)
	}
	newTok := readToken(t, s1.DataDir())
	if !strings.HasSuffix(newTok, "::server:rotated-on-s1") {
		t.Fatalf("s1's token after the rotation: %q", newTok)
	}
	// s2 follows: it logs taking the token, and its file is the new one.
	if err := s2.waitFor("took the server token rotated on another server", time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := readToken(t, s2.DataDir()); got != newTok {
		t.Fatalf("s2's token after the rotation on s1: %q, want %q", got, newTok)
	}
	if out := runNSServerToExit(t, nodes["s3"], time.Minute, append([]string{"--server", s2.URL(), "--token", oldTok}, light...)...); !strings.Contains(out, "token not accepted") {
		t.Fatalf("a server joining s2 with the old token: no clear refusal:\n%s", out)
	}

	s2.Stop()
	s2.Restart()
	if !strings.Contains(s2.Output(), "skiff token rotate") {
		t.Errorf("s2, restarted with the old --token, does not say it was rotated away:\n%s", s2.Output())
	}
}

// TestTokenRotateExternalDatastore rotates the token of two servers on an
// external datastore (etcd) while the second is down: the bootstrap data
// is re-sealed with the new token; the second server, restarted with its
// --token still the old one, takes the new one from the datastore and
// starts; a new server given the old token is refused, one given the new
// token joins.
func TestTokenRotateExternalDatastore(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	if testing.Short() {
		t.Skip("token rotation: root end-to-end test")
	}
	if err := multinode.Check(); err != nil {
		t.Skip(err)
	}
	nw, err := multinode.NewNetwork("sktokx", "10.95.0.1/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Cleanup)
	endpoint, files := startExternalEtcd(t, nw.Gateway)
	// Short: kine's socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "sk-tok-")
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
	ds := append([]string{"--datastore-endpoint", endpoint,
		"--datastore-cafile", files.CA, "--datastore-certfile", files.Cert, "--datastore-keyfile", files.Key,
		"--disable-agent"}, serverLightArgs...)
	with := func(args ...string) []string { return append(slices.Clone(ds), args...) }

	s1 := startNSServer(t, addNode("srv1"), ds...)
	oldTok := readToken(t, s1.DataDir())
	s2 := startNSServer(t, addNode("srv2"), with("--token", oldTok)...)
	s2.Stop()

	out, err := runToExit(t, time.Minute, "token", "rotate", "--server", s1.URL(), "--data-dir", s1.DataDir(), "--new-token", "rotated-on-srv1")
	if err != nil {
		t.Fatalf("token rotate: %v\n%s", err, out)
	}
	newTok := readToken(t, s1.DataDir())
	if !strings.Contains(s1.Output(), "resealed the bootstrap data in the datastore with the new token") {
		t.Errorf("srv1 did not log the reseal:\n%s", s1.Output())
	}

	s2.Restart()
	if !strings.Contains(s2.Output(), "rotated while this server was down") {
		t.Errorf("srv2 did not say it took the rotated token:\n%s", s2.Output())
	}
	if got := readToken(t, s2.DataDir()); got != newTok {
		t.Fatalf("srv2's token after its restart: %q, want %q", got, newTok)
	}

	out = runNSServerToExit(t, addNode("srv3"), 2*time.Minute, with("--token", oldTok)...)
	if !strings.Contains(out, "the datastore holds a cluster with another token") {
		t.Fatalf("a new server with the old token: no clear refusal:\n%s", out)
	}
	s4 := startNSServer(t, addNode("srv4"), with("--token", newTok)...)
	if got := readToken(t, s4.DataDir()); got != newTok {
		t.Fatalf("srv4's token: %q, want %q", got, newTok)
	}
}
