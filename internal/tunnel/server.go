package tunnel

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/logging"
	"github.com/skiffkube/skiff/internal/metrics"
	"github.com/skiffkube/skiff/internal/netutil"
	"github.com/skiffkube/skiff/internal/pki"
)

// ServerConfig is what the server side needs.
type ServerConfig struct {
	// ClientCAFile verifies the agents' kubelet client certificates.
	ClientCAFile string
	// SocketPath is the unix socket the apiserver's egress selector dials
	// (HTTP CONNECT).
	SocketPath string
	// Kubeconfig reads Node objects, to map an address to its node.
	Kubeconfig string
	// LocalNode is this server's own node, dialled directly; empty when the
	// server runs no node.
	LocalNode string
	// Nodes, when set, replaces the Node informer (tests).
	Nodes func() []*corev1.Node
}

// Server accepts agents' tunnels on the supervisor and serves the
// apiserver's egress socket.
type Server struct {
	cfg      ServerConfig
	log      *slog.Logger
	failures *logging.Throttle
	pool     *x509.CertPool
	ln       net.Listener
	upgrader websocket.Upgrader

	mu sync.Mutex
	// sessions holds each node's tunnels, newest last: an agent may reach
	// this server under two addresses (its --server and an endpoint), and a
	// reconnect may overlap the session it replaces.
	sessions map[string][]*yamux.Session
	started  bool
	stopped  bool
	synced   func() bool
	component.Runner
}

// NewServer returns the server side of the tunnel as a component; it is also
// the http.Handler for Path.
func NewServer(cfg ServerConfig, log *slog.Logger) *Server {
	log = log.With("component", "tunnel")
	return &Server{cfg: cfg, log: log, failures: logging.NewThrottle(log, failureLogInterval), sessions: map[string][]*yamux.Session{}}
}

func (s *Server) Name() string { return "tunnel" }

func (s *Server) Init(context.Context) error {
	pem, err := os.ReadFile(s.cfg.ClientCAFile)
	if err != nil {
		return fmt.Errorf("reading client CA: %w", err)
	}
	s.pool = x509.NewCertPool()
	if !s.pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("client CA %s holds no certificate", s.cfg.ClientCAFile)
	}
	// A socket left by a crash would make Listen fail; nothing else uses it.
	if err := os.Remove(s.cfg.SocketPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale egress socket: %w", err)
	}
	ln, err := net.Listen("unix", s.cfg.SocketPath)
	if err != nil {
		return fmt.Errorf("egress socket: %w", err)
	}
	if err := os.Chmod(s.cfg.SocketPath, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("egress socket: %w", err)
	}
	s.ln = ln
	return nil
}

func (s *Server) Start(context.Context) error {
	var factory informers.SharedInformerFactory
	if s.cfg.Nodes == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", s.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return err
		}
		factory = informers.NewSharedInformerFactory(cs, 10*time.Minute)
		nodes := factory.Core().V1().Nodes()
		lister, synced := nodes.Lister(), nodes.Informer().HasSynced
		s.cfg.Nodes = func() []*corev1.Node {
			list, _ := lister.List(labels.Everything())
			return list
		}
		s.synced = synced
	}
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	s.Go(func(ctx context.Context) error {
		if factory != nil {
			factory.Start(ctx.Done())
			defer factory.Shutdown()
		}
		go func() { <-ctx.Done(); s.ln.Close() }()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("egress socket: %w", err)
			}
			go s.serveEgress(ctx, c)
		}
	})
	return nil
}

func (s *Server) Ready() error { return nil }

func (s *Server) Stop() error {
	s.mu.Lock()
	s.stopped = true
	started := s.started
	for name, list := range s.sessions {
		for _, sess := range list {
			sess.Close()
		}
		delete(s.sessions, name)
	}
	s.mu.Unlock()
	var err error
	if started {
		err = s.Runner.Stop(5 * time.Second)
	} else if s.ln != nil {
		s.ln.Close()
	}
	_ = os.Remove(s.cfg.SocketPath)
	return err
}

// Connected lists the nodes with a tunnel up.
func (s *Server) Connected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.sessions))
	for n, list := range s.sessions {
		if len(list) > 0 {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// ServeHTTP takes an agent's tunnel: its client certificate must be a
// kubelet's, signed by the cluster's client CA.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		http.Error(w, "server stopping", http.StatusServiceUnavailable)
		return
	}
	node, err := s.authenticate(r)
	if err != nil {
		s.log.Warn("tunnel refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "tunnel refused: "+err.Error(), http.StatusUnauthorized)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("websocket upgrade failed", "node", node, "err", err)
		return
	}
	sess, err := yamux.Client(newWSConn(ws), yamuxConfig(s.log))
	if err != nil {
		ws.Close()
		return
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		sess.Close()
		return
	}
	s.sessions[node] = append(s.sessions[node], sess)
	metrics.TunnelSessions.WithLabelValues(node).Set(float64(len(s.sessions[node])))
	s.mu.Unlock()
	s.log.Info("agent tunnel connected", "node", node, "remote", r.RemoteAddr)
	go func() {
		<-sess.CloseChan()
		s.mu.Lock()
		list := slices.DeleteFunc(s.sessions[node], func(x *yamux.Session) bool { return x == sess })
		if len(list) == 0 {
			delete(s.sessions, node)
			metrics.TunnelSessions.DeleteLabelValues(node)
		} else {
			s.sessions[node] = list
			metrics.TunnelSessions.WithLabelValues(node).Set(float64(len(list)))
		}
		s.mu.Unlock()
		s.log.Info("agent tunnel closed", "node", node, "remote", r.RemoteAddr)
	}()
}

// session is the node's newest open tunnel, nil when it has none.
func (s *Server) session(node string) *yamux.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.sessions[node]
	for i := len(list) - 1; i >= 0; i-- {
		if !list[i].IsClosed() {
			return list[i]
		}
	}
	return nil
}

func (s *Server) authenticate(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("no client certificate (the agent's kubelet client certificate is required)")
	}
	// Only kubelet client certificates may open a tunnel, and only for
	// their own node.
	return pki.VerifyNodeClient(r.TLS.PeerCertificates[0], r.TLS.PeerCertificates[1:], s.pool, time.Time{})
}

// serveEgress answers one HTTP CONNECT from the apiserver.
func (s *Server) serveEgress(ctx context.Context, c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout + dialTimeout))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		c.Close()
		return
	}
	if req.Method != http.MethodConnect {
		fmt.Fprintf(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		c.Close()
		return
	}
	addr := req.URL.Host
	target, err := s.Dial(ctx, addr)
	if err != nil {
		s.failures.Log(addr, "apiserver connection failed", "addr", addr, "err", err)
		fmt.Fprintf(c, "HTTP/1.1 502 %s\r\nContent-Length: 0\r\n\r\n", oneLine(err))
		c.Close()
		return
	}
	if _, err := fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		c.Close()
		target.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	netutil.Splice(ctx, &bufferedConn{Conn: c, r: br}, target)
}

// Dial connects to addr: through the tunnel of the node that owns the address
// (its pod CIDR or its node address), else directly. A node without a
// tunnel (a server's own node, an agent from before tunnels) is dialled
// directly too.
func (s *Server) Dial(ctx context.Context, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	s.waitSynced(ctx)
	node, err := s.nodeFor(net.ParseIP(host))
	if err != nil {
		return nil, err
	}
	if node != "" && node != s.cfg.LocalNode {
		if sess := s.session(node); sess != nil {
			stream, err := sess.Open()
			if err != nil {
				return nil, fmt.Errorf("tunnel to node %s: %w", node, err)
			}
			if err := dialStream(stream, addr); err != nil {
				stream.Close()
				return nil, fmt.Errorf("node %s dialling %s: %w", node, addr, err)
			}
			return halfCloser{stream}, nil
		}
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil && node != "" && node != s.cfg.LocalNode {
		return nil, fmt.Errorf("node %s has no tunnel connected, and dialling it directly failed: %w", node, err)
	}
	return conn, err
}

// waitSynced holds a dial until the Node informer has synced (bounded): with
// an empty cache an agent's address would be dialled directly.
func (s *Server) waitSynced(ctx context.Context) {
	if s.synced == nil {
		return
	}
	deadline := time.Now().Add(dialTimeout)
	for !s.synced() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
}

// nodeFor names the node that owns ip: the one whose pod CIDR holds it (the
// controller-manager assigns those), else this server's own node or the one
// node that reports ip as an address. Addresses come from node status, which
// each kubelet writes for itself: an address two nodes claim is refused
// rather than routed to either.
func (s *Server) nodeFor(ip net.IP) (string, error) {
	if ip == nil || s.cfg.Nodes == nil {
		return "", nil
	}
	nodes := s.cfg.Nodes()
	for _, n := range nodes {
		for _, cidr := range n.Spec.PodCIDRs {
			if _, nw, err := net.ParseCIDR(cidr); err == nil && nw.Contains(ip) {
				return n.Name, nil
			}
		}
	}
	var owners []string
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if (a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP) && ip.Equal(net.ParseIP(a.Address)) {
				owners = append(owners, n.Name)
				break
			}
		}
	}
	switch {
	case len(owners) == 0:
		return "", nil
	case slices.Contains(owners, s.cfg.LocalNode):
		return s.cfg.LocalNode, nil
	case len(owners) > 1:
		slices.Sort(owners)
		return "", fmt.Errorf("address %s is claimed by several nodes (%s): not routing it", ip, strings.Join(owners, ", "))
	}
	return owners[0], nil
}

// bufferedConn reads what the CONNECT parser buffered before the socket.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite half-closes the apiserver's connection (a unix socket).
func (b *bufferedConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}
