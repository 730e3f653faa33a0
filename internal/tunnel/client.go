package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/logging"
	"github.com/skiffkube/skiff/internal/netutil"
)

// ClientConfig is what the agent side needs.
type ClientConfig struct {
	// Servers lists the servers' host:port; the client keeps one tunnel to
	// each, since each server's apiserver dials the kubelet.
	Servers func() []string
	// CAPEM verifies the servers.
	CAPEM []byte
	// CertFile and KeyFile are the kubelet client certificate, which names
	// the node to the server. Read at each connect, so a renewed one is used.
	CertFile, KeyFile string
	// NodeIPs and KubeletPort: a connection to one of them reaches the
	// kubelet on loopback.
	NodeIPs     []string
	KubeletPort int
	// PodCIDRs may be dialled directly: the cluster's pod network.
	PodCIDRs []netip.Prefix
}

// Client keeps the agent's tunnels up.
type Client struct {
	cfg       ClientConfig
	log       *slog.Logger
	failures  *logging.Throttle
	pool      *x509.CertPool
	connected atomic.Int32
	component.Runner
}

// NewClient returns the agent side of the tunnel as a component.
func NewClient(cfg ClientConfig, log *slog.Logger) *Client {
	log = log.With("component", "tunnel")
	return &Client{cfg: cfg, log: log, failures: logging.NewThrottle(log, failureLogInterval)}
}

func (c *Client) Name() string { return "tunnel" }

func (c *Client) Init(context.Context) error {
	c.pool = x509.NewCertPool()
	if !c.pool.AppendCertsFromPEM(c.cfg.CAPEM) {
		return errors.New("server CA holds no certificate")
	}
	if c.cfg.KubeletPort == 0 {
		return errors.New("no kubelet port")
	}
	return nil
}

func (c *Client) Start(context.Context) error {
	c.Go(c.follow)
	return nil
}

// Ready once one tunnel is up: before that the apiserver cannot reach the
// kubelet (logs, exec).
func (c *Client) Ready() error {
	if c.connected.Load() == 0 {
		return errors.New("no tunnel to a server yet")
	}
	return nil
}

func (c *Client) Stop() error { return c.Runner.Stop(5 * time.Second) }

// follow keeps one tunnel per server in the current list. A server that
// leaves the list keeps its live tunnel (the list can flap while servers
// publish their endpoints) but is not redialled once it breaks.
func (c *Client) follow(ctx context.Context) error {
	type keeper struct {
		wanted atomic.Bool
		done   chan struct{}
	}
	running := map[string]*keeper{}
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		want := map[string]bool{}
		for _, s := range c.cfg.Servers() {
			want[s] = true
		}
		for s, k := range running {
			select {
			case <-k.done:
				delete(running, s)
			default:
				k.wanted.Store(want[s])
			}
		}
		for s := range want {
			if running[s] == nil {
				k := &keeper{done: make(chan struct{})}
				k.wanted.Store(true)
				running[s] = k
				wg.Add(1)
				go func() { defer wg.Done(); defer close(k.done); c.keep(ctx, s, k.wanted.Load) }()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// keep reconnects to one server with backoff while it is wanted and ctx
// lasts. The delay restarts at a second after a tunnel that was up, and is
// jittered so that agents do not all redial a restarted server at once.
func (c *Client) keep(ctx context.Context, server string, wanted func() bool) {
	const first, most = time.Second, 15 * time.Second
	backoff := first
	for ctx.Err() == nil && wanted() {
		up, err := c.connect(ctx, server)
		if ctx.Err() != nil {
			return
		}
		if up {
			backoff = first
		}
		wait := backoff + time.Duration(rand.Int64N(int64(backoff/2))) - backoff/4
		c.log.Warn("tunnel down, reconnecting", "server", server, "in", wait.Round(10*time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, most)
	}
}

// connect runs one tunnel until it breaks or ctx ends; up says whether it
// was established.
func (c *Client) connect(ctx context.Context, server string) (up bool, err error) {
	cert, err := tls.LoadX509KeyPair(c.cfg.CertFile, c.cfg.KeyFile)
	if err != nil {
		return false, fmt.Errorf("loading the kubelet client certificate: %w", err)
	}
	d := websocket.Dialer{
		TLSClientConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			RootCAs:      c.pool,
			Certificates: []tls.Certificate{cert},
		},
		HandshakeTimeout: 10 * time.Second,
	}
	ws, resp, err := d.DialContext(ctx, "wss://"+server+Path, nil)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return false, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return false, err
	}
	sess, err := yamux.Server(newWSConn(ws), yamuxConfig(c.log))
	if err != nil {
		ws.Close()
		return false, err
	}
	defer sess.Close()
	c.connected.Add(1)
	defer c.connected.Add(-1)
	c.log.Info("tunnel connected", "server", server)
	go func() {
		select {
		case <-ctx.Done():
			sess.Close()
		case <-sess.CloseChan():
		}
	}()
	for {
		stream, err := sess.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			return true, fmt.Errorf("session closed: %w", err)
		}
		go c.serveStream(ctx, stream)
	}
}

// serveStream dials what the server asked for, if this node allows it.
func (c *Client) serveStream(ctx context.Context, stream net.Conn) {
	_ = stream.SetDeadline(time.Now().Add(handshakeTimeout))
	addr, err := readLine(stream)
	if err != nil {
		stream.Close()
		return
	}
	target, err := c.dial(ctx, addr)
	if err != nil {
		c.failures.Log(addr, "server's connection refused or failed", "addr", addr, "err", err)
		_, _ = io.WriteString(stream, "error: "+oneLine(err)+"\n")
		stream.Close()
		return
	}
	if _, err := io.WriteString(stream, "ok\n"); err != nil {
		stream.Close()
		target.Close()
		return
	}
	_ = stream.SetDeadline(time.Time{})
	netutil.Splice(ctx, halfCloser{stream}, target)
}

// dial allows the kubelet's port on this node's addresses (reached on
// loopback) and addresses in the pod CIDRs; nothing else, so a server cannot
// use an agent to reach the agent's network.
func (c *Client) dial(ctx context.Context, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	port, _ := strconv.Atoi(portStr)
	target := ""
	switch {
	case ip == nil:
		return nil, fmt.Errorf("address %q is not an IP", addr)
	case port == c.cfg.KubeletPort && (ip.IsLoopback() || c.isNodeIP(ip)):
		target = net.JoinHostPort("127.0.0.1", portStr)
	case c.inPodCIDR(ip):
		target = addr
	default:
		return nil, fmt.Errorf("%s is neither this node's kubelet nor a pod address", addr)
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return d.DialContext(dctx, "tcp", target)
}

func (c *Client) isNodeIP(ip net.IP) bool {
	for _, s := range c.cfg.NodeIPs {
		if ip.Equal(net.ParseIP(s)) {
			return true
		}
	}
	return false
}

func (c *Client) inPodCIDR(ip net.IP) bool {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	addr = addr.Unmap()
	for _, p := range c.cfg.PodCIDRs {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
