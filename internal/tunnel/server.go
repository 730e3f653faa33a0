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
)

// nodeUserPrefix and nodesGroup are the identity a kubelet client
// certificate carries; only those may open a tunnel, and only for themselves.
const (
	nodeUserPrefix = "system:node:"
	nodesGroup     = "system:nodes"
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
	pool     *x509.CertPool
	ln       net.Listener
	upgrader websocket.Upgrader

	mu       sync.Mutex
	sessions map[string]*yamux.Session
	component.Runner
}

// NewServer returns the server side of the tunnel as a component; it is also
// the http.Handler for Path.
func NewServer(cfg ServerConfig, log *slog.Logger) *Server {
	return &Server{cfg: cfg, log: log.With("component", "tunnel"), sessions: map[string]*yamux.Session{}}
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
	if s.cfg.Nodes == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", s.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return err
		}
		f := informers.NewSharedInformerFactory(cs, 10*time.Minute)
		lister := f.Core().V1().Nodes().Lister()
		s.Go(func(ctx context.Context) error {
			f.Start(ctx.Done())
			<-ctx.Done()
			f.Shutdown()
			return nil
		})
		s.cfg.Nodes = func() []*corev1.Node {
			nodes, _ := lister.List(labels.Everything())
			return nodes
		}
	}
	s.Go(func(ctx context.Context) error {
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
	err := s.Runner.Stop(5 * time.Second)
	s.mu.Lock()
	for name, sess := range s.sessions {
		sess.Close()
		delete(s.sessions, name)
	}
	s.mu.Unlock()
	_ = os.Remove(s.cfg.SocketPath)
	return err
}

// Connected lists the nodes with a tunnel up.
func (s *Server) Connected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.sessions))
	for n := range s.sessions {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ServeHTTP takes an agent's tunnel: its client certificate must be a
// kubelet's, signed by the cluster's client CA.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	if old := s.sessions[node]; old != nil {
		// A reconnecting agent replaces its half-dead predecessor.
		old.Close()
	}
	s.sessions[node] = sess
	s.mu.Unlock()
	s.log.Info("agent tunnel connected", "node", node, "remote", r.RemoteAddr)
	go func() {
		<-sess.CloseChan()
		s.mu.Lock()
		if s.sessions[node] == sess {
			delete(s.sessions, node)
			s.log.Info("agent tunnel closed", "node", node)
		}
		s.mu.Unlock()
	}()
}

func (s *Server) authenticate(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("no client certificate (the agent's kubelet client certificate is required)")
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         s.pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", fmt.Errorf("client certificate %q: %w", leaf.Subject.CommonName, err)
	}
	name, ok := strings.CutPrefix(leaf.Subject.CommonName, nodeUserPrefix)
	if !ok || name == "" || !slices.Contains(leaf.Subject.Organization, nodesGroup) {
		return "", fmt.Errorf("client certificate %q is not a node's (%s<name> in group %s)", leaf.Subject.CommonName, nodeUserPrefix, nodesGroup)
	}
	return name, nil
}

// serveEgress answers one HTTP CONNECT from the apiserver.
func (s *Server) serveEgress(ctx context.Context, c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
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
		s.log.Debug("egress dial failed", "addr", addr, "err", err)
		fmt.Fprintf(c, "HTTP/1.1 502 %s\r\nContent-Length: 0\r\n\r\n", strings.ReplaceAll(err.Error(), "\r\n", " "))
		c.Close()
		return
	}
	if _, err := fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		c.Close()
		target.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	splice(&bufferedConn{Conn: c, r: br}, target)
}

// Dial connects to addr: through the tunnel of the node that owns the address
// (a node address or an address in its pod CIDR), else directly.
func (s *Server) Dial(ctx context.Context, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	if node := s.nodeFor(net.ParseIP(host)); node != "" && node != s.cfg.LocalNode {
		s.mu.Lock()
		sess := s.sessions[node]
		s.mu.Unlock()
		if sess == nil {
			return nil, fmt.Errorf("node %s has no tunnel connected", node)
		}
		stream, err := sess.Open()
		if err != nil {
			return nil, fmt.Errorf("tunnel to node %s: %w", node, err)
		}
		if err := dialStream(stream, addr); err != nil {
			stream.Close()
			return nil, fmt.Errorf("node %s dialling %s: %w", node, addr, err)
		}
		return stream, nil
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return d.DialContext(dctx, "tcp", addr)
}

// nodeFor names the node whose address or pod CIDR holds ip.
func (s *Server) nodeFor(ip net.IP) string {
	if ip == nil || s.cfg.Nodes == nil {
		return ""
	}
	for _, n := range s.cfg.Nodes() {
		for _, a := range n.Status.Addresses {
			if (a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP) && ip.Equal(net.ParseIP(a.Address)) {
				return n.Name
			}
		}
		for _, cidr := range n.Spec.PodCIDRs {
			if _, nw, err := net.ParseCIDR(cidr); err == nil && nw.Contains(ip) {
				return n.Name
			}
		}
	}
	return ""
}

// bufferedConn reads what the CONNECT parser buffered before the socket.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
