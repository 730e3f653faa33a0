package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// notifySocket plays systemd's part for Type=notify: a unixgram socket whose
// path goes into NOTIFY_SOCKET. Every READY=1 is checked by onReady the
// moment it arrives, so that the check proves what was true when skiff
// said it was ready.
type notifySocket struct {
	Path string
	msgs chan notifyMsg
}

type notifyMsg struct {
	state    string
	readyErr error // onReady's verdict for a READY=1
}

func listenNotify(t *testing.T, onReady func() error) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{Path: path, msgs: make(chan notifyMsg, 32)}
	go func() {
		buf := make([]byte, 4096)
		for {
			size, err := conn.Read(buf)
			if err != nil {
				return
			}
			m := notifyMsg{state: strings.TrimSpace(string(buf[:size]))}
			if strings.Contains(m.state, "READY=1") {
				m.readyErr = onReady()
			}
			select {
			case n.msgs <- m:
			default:
			}
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// Env is the variable that points a process at the socket.
func (n *notifySocket) Env() string { return "NOTIFY_SOCKET=" + n.Path }

// expect waits for the next message and fails unless it is state (and, for
// READY=1, unless onReady passed when it arrived).
func (n *notifySocket) expect(t *testing.T, state string, timeout time.Duration) {
	t.Helper()
	select {
	case m := <-n.msgs:
		if m.state != state {
			t.Fatalf("NOTIFY_SOCKET got %q, want %q", m.state, state)
		}
		if m.readyErr != nil {
			t.Fatalf("READY=1 arrived too early: %v", m.readyErr)
		}
	case <-time.After(timeout):
		t.Fatalf("no %s on NOTIFY_SOCKET within %s", state, timeout)
	}
}

// none fails if a message is waiting: nothing else may have been sent.
func (n *notifySocket) none(t *testing.T) {
	t.Helper()
	select {
	case m := <-n.msgs:
		t.Errorf("unexpected message on NOTIFY_SOCKET: %q", m.state)
	default:
	}
}

// clientFor builds a client from a kubeconfig without a *testing.T, for
// checks made off the test goroutine.
func clientFor(kubeconfig string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// nodesReadyNow checks that there is a Node and every Node is Ready.
func nodesReadyNow(kubeconfig string) func() error {
	return func() error {
		c, err := clientFor(kubeconfig)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("listing nodes: %w", err)
		}
		if len(nodes.Items) == 0 {
			return errors.New("no Node yet")
		}
		for i := range nodes.Items {
			if !nodeReady(&nodes.Items[i]) {
				return fmt.Errorf("node %s is not Ready: %+v", nodes.Items[i].Name, nodes.Items[i].Status.Conditions)
			}
		}
		return nil
	}
}

// apiReadyNow checks that the apiserver's /readyz says ok.
func apiReadyNow(kubeconfig string) func() error {
	return func() error {
		c, err := clientFor(kubeconfig)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		body, err := c.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil || strings.TrimSpace(string(body)) != "ok" {
			return fmt.Errorf("/readyz: %v %q", err, body)
		}
		return nil
	}
}
