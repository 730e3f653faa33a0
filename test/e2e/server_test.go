package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// ourLine is the shape of every line skiff prints at the default level;
// anything else is upstream output leaking through.
var ourLine = regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO |WARN |ERROR) `)

func TestServerKeepsStateAcrossRestart(t *testing.T) {
	s := newServer(t)
	// Without an agent, ready means the API is.
	notify := listenNotify(t, apiReadyNow(s.Kubeconfig))
	s.env = append(s.env, notify.Env())
	s.Start()
	notify.expect(t, "READY=1", 30*time.Second)

	t.Run("start-up lines", func(t *testing.T) {
		out := s.Output()
		for _, phase := range []string{"datastore ready in", "certificates ready in", "apiserver ready in", "controllers ready in", "skiff server ready in"} {
			if !strings.Contains(out, phase) {
				t.Errorf("start-up output lacks %q:\n%s", phase, out)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if !ourLine.MatchString(line) {
				t.Errorf("upstream output at the default log level: %q", line)
			}
		}
	})

	t.Run("kubeconfig is private", func(t *testing.T) {
		st, err := os.Stat(s.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("kubeconfig mode %v, want 0600", st.Mode().Perm())
		}
	})

	c := s.Client()
	ctx := context.Background()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "keep"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("watch through the supervisor", func(t *testing.T) {
		w, err := c.CoreV1().ConfigMaps("keep").Watch(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		if _, err := c.CoreV1().ConfigMaps("keep").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "state"}, Data: map[string]string{"answer": "42"},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-w.ResultChan():
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if ev.Type != watch.Added || !ok || cm.Name != "state" {
				t.Fatalf("unexpected event %v %T", ev.Type, ev.Object)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event within 10s")
		}
	})

	t.Run("kubernetes Service points at the supervisor", func(t *testing.T) {
		var ep *corev1.Endpoints
		deadline := time.Now().Add(30 * time.Second)
		for {
			var err error
			ep, err = c.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err == nil && len(ep.Subsets) == 1 && len(ep.Subsets[0].Ports) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no endpoints for the kubernetes Service: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got := ep.Subsets[0].Ports[0].Port; int(got) != s.Port {
			t.Fatalf("kubernetes endpoints port %d, want the supervisor's %d", got, s.Port)
		}
		slice, err := c.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil || int(*slice.Ports[0].Port) != s.Port {
			t.Fatalf("kubernetes EndpointSlice: %v %+v", err, slice)
		}
	})

	t.Run("anonymous API access is refused", func(t *testing.T) {
		code, body := get(t, s.AnonymousClient(), s.URL()+"/api")
		if code != 401 {
			t.Fatalf("anonymous GET /api: %d %s, want 401", code, body)
		}
		if code, _ := get(t, s.AnonymousClient(), s.URL()+"/readyz"); code != 200 {
			t.Fatalf("anonymous GET /readyz: %d, want 200", code)
		}
	})

	t.Run("ping and cacerts", func(t *testing.T) {
		code, body := get(t, s.AnonymousClient(), s.URL()+"/ping")
		if code != 200 || string(body) != "pong" {
			t.Fatalf("/ping: %d %q", code, body)
		}
		code, body = get(t, s.AnonymousClient(), s.URL()+"/cacerts")
		if code != 200 {
			t.Fatalf("/cacerts: %d", code)
		}
		block, _ := pem.Decode(body)
		if block == nil {
			t.Fatalf("/cacerts is not PEM: %q", body)
		}
		ca, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !ca.IsCA {
			t.Fatalf("/cacerts is not a CA certificate: %v", err)
		}
		tok := readToken(t, s.DataDir)
		sum := sha256.Sum256(body)
		if want := "SK10" + hex.EncodeToString(sum[:]) + "::server:"; !strings.HasPrefix(tok, want) {
			t.Fatalf("token %q does not pin the served CA (want prefix %q)", tok[:20], want)
		}
	})

	before := snapshot(t, filepath.Join(s.DataDir, "server", "tls"))
	tokenBefore := readToken(t, s.DataDir)

	if took := s.Stop(); took > 10*time.Second {
		t.Errorf("stop took %s, want under 10s", took)
	}
	notify.expect(t, "STOPPING=1", 30*time.Second)
	notify.none(t)
	if !strings.Contains(s.Output(), "stopped in") {
		t.Errorf("no stop line:\n%s", s.Output())
	}

	// Restart on the same data dir, with a looser kubeconfig mode.
	s.Start("--write-kubeconfig-mode", "0640")
	cm, err := s.Client().CoreV1().ConfigMaps("keep").Get(ctx, "state", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ConfigMap lost across restart: %v", err)
	}
	if cm.Data["answer"] != "42" {
		t.Fatalf("ConfigMap data changed: %v", cm.Data)
	}
	if tok := readToken(t, s.DataDir); tok != tokenBefore {
		t.Error("token changed across restart")
	}
	after := snapshot(t, filepath.Join(s.DataDir, "server", "tls"))
	for name, sum := range before {
		if after[name] != sum {
			t.Errorf("%s changed across restart: certificates should be reused", name)
		}
	}
	if st, err := os.Stat(s.Kubeconfig); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("kubeconfig mode after --write-kubeconfig-mode 0640: %v %v", st.Mode().Perm(), err)
	}
	s.Stop()
}

func readToken(t *testing.T, dataDir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// snapshot maps every file under dir to a hash of its content and mode.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, _ := d.Info()
		sum := sha256.Sum256(append(data, []byte(info.Mode().String())...))
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalSnapshots(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestSecondSignalForcesExit: a stop that is taking its time ends at once on
// a second signal.
func TestSecondSignalForcesExit(t *testing.T) {
	s := newServer(t)
	s.Start()
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	if err := s.waitFor("stopping", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5s after the second signal")
	}
	if strings.Contains(s.Output(), "second signal") {
		if s.exitErr == nil {
			t.Fatal("a forced exit must not report success")
		}
	} else if !strings.Contains(s.Output(), "stopped in") {
		// The graceful stop may win the race; then it must have finished.
		t.Fatalf("neither forced nor clean exit:\n%s", s.Output())
	}
	t.Logf("exited %s after the second signal", time.Since(begin))
}
