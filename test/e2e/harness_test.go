// Package e2e drives the real skiff binary. These tests start servers, so
// they are skipped under -short; `make test` builds bin/skiff and points
// SKIFF_BIN at it.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// skiffBin returns the binary under test, skipping under -short.
func skiffBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the skiff binary; skipped under -short")
	}
	if p := os.Getenv("SKIFF_BIN"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../bin/skiff")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no skiff binary: run `make build` or set SKIFF_BIN (%v)", err)
	}
	return p
}

// freePort asks the kernel for a free TCP port on loopback.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is one `skiff server` process in a private data dir on free ports.
type server struct {
	t          *testing.T
	bin        string
	DataDir    string
	Kubeconfig string
	Port       int
	extra      []string
	env        []string // added to the clean environment ("PATH=...")
	ports      []string
	cmd        *exec.Cmd
	out        *syncBuffer
	exited     chan struct{}
	exitErr    error
}

// newServer returns a control-plane-only server: most tests are about the
// control plane, and a node would make them slower and touch the host.
func newServer(t *testing.T, extra ...string) *server {
	t.Helper()
	return newServerWith(t, append([]string{"--disable-agent"}, extra...)...)
}

func newServerWith(t *testing.T, extra ...string) *server {
	t.Helper()
	dir := t.TempDir()
	s := &server{
		t:          t,
		bin:        skiffBin(t),
		DataDir:    filepath.Join(dir, "data"),
		Kubeconfig: filepath.Join(dir, "kubeconfig.yaml"),
		Port:       freePort(t),
		extra:      extra,
	}
	s.ports = []string{
		"--kube-apiserver-arg=secure-port=" + strconv.Itoa(freePort(t)),
		"--kube-controller-manager-arg=secure-port=" + strconv.Itoa(freePort(t)),
		"--kube-scheduler-arg=secure-port=" + strconv.Itoa(freePort(t)),
	}
	t.Cleanup(s.kill)
	return s
}

// Args is the command line the server runs with, before extra.
func (s *server) Args() []string {
	return append([]string{"server",
		"--data-dir", s.DataDir,
		"--write-kubeconfig", s.Kubeconfig,
		"--https-listen-port", strconv.Itoa(s.Port),
		"--config", filepath.Join(filepath.Dir(s.DataDir), "no-config.yaml"),
	}, s.ports...)
}

// Start runs the server and waits until it says it is ready.
func (s *server) Start(extra ...string) {
	s.t.Helper()
	if err := s.start(extra...); err != nil {
		s.t.Fatal(err)
	}
	if err := s.waitFor("skiff server ready in", 2*time.Minute); err != nil {
		s.t.Fatal(err)
	}
}

func (s *server) start(extra ...string) error {
	// The config file must exist when named explicitly; an empty one keeps
	// a developer's /etc/skiff/config.yaml out of the test.
	cfgFile := filepath.Join(filepath.Dir(s.DataDir), "no-config.yaml")
	if _, err := os.Stat(cfgFile); err != nil {
		if err := os.WriteFile(cfgFile, nil, 0o600); err != nil {
			return err
		}
	}
	args := append(append(s.Args(), s.extra...), extra...)
	s.cmd = exec.Command(s.bin, args...)
	s.out = &syncBuffer{}
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	s.cmd.Env = append(cleanEnv(), s.env...)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.exited)
	}()
	return nil
}

// cleanEnv keeps SKIFF_* settings of the developer's shell out of tests.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SKIFF_") && !strings.HasPrefix(e, "KUBECONFIG=") {
			env = append(env, e)
		}
	}
	return env
}

func (s *server) waitFor(text string, timeout time.Duration) error {
	return waitForOutput(s.out, s.exited, &s.exitErr, text, timeout)
}

// waitForOutput waits until out holds text, failing when the process exits
// first (exitErr is read once exited is closed) or timeout passes; both
// errors carry the output so far.
func waitForOutput(out *syncBuffer, exited <-chan struct{}, exitErr *error, text string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for !strings.Contains(out.String(), text) {
		select {
		case <-exited:
			return fmt.Errorf("skiff exited (%v) before %q; output:\n%s", *exitErr, text, out.String())
		case <-deadline:
			return fmt.Errorf("no %q after %s; output:\n%s", text, timeout, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Stop sends SIGTERM and returns how long the process took to exit.
func (s *server) Stop() time.Duration {
	s.t.Helper()
	begin := time.Now()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.kill()
		s.t.Fatalf("skiff did not exit 30s after SIGTERM; output:\n%s", s.out.String())
	}
	if s.exitErr != nil {
		s.t.Fatalf("skiff exited with %v after SIGTERM; output:\n%s", s.exitErr, s.out.String())
	}
	return time.Since(begin)
}

func (s *server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
}

// Output is everything the process printed.
func (s *server) Output() string { return s.out.String() }

func (s *server) Client() *kubernetes.Clientset {
	s.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		s.t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// URL is the supervisor's base URL.
func (s *server) URL() string { return "https://127.0.0.1:" + strconv.Itoa(s.Port) }

// AnonymousClient trusts the server CA and presents no credentials.
func (s *server) AnonymousClient() *http.Client {
	s.t.Helper()
	pem, err := os.ReadFile(filepath.Join(s.DataDir, "server", "tls", "server-ca.crt"))
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func get(t *testing.T, c *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// runToExit runs skiff with args and returns its combined output and exit
// error, failing the test if it does not exit within timeout.
func runToExit(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, skiffBin(t), args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("skiff %v did not exit within %s; output:\n%s", args, timeout, out)
	}
	return string(out), err
}
