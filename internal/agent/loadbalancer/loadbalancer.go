// Package loadbalancer is the agent's client-side load balancer: a TCP proxy on
// loopback that the agent's kubelet and kube-proxy use instead of one server
// address. Each connection goes to the server that answered last, and on to the
// next when that one does not answer, so a server that fails is skipped. A
// server that leaves the list (it left the `kubernetes` Service's endpoints:
// dead or stopped) has its connections closed, so that long-lived watches
// reconnect through a live server rather than hang on a dead host. TLS
// passes through untouched: every server's certificate names 127.0.0.1.
package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/netutil"
)

// dialTimeout bounds how long a server that does not answer holds a connection up.
const dialTimeout = 2 * time.Second

// LB is the component.
type LB struct {
	addr string
	log  *slog.Logger

	mu      sync.Mutex
	servers []string                         // host:port
	next    int                              // index of the server that answered last
	conns   map[string]map[net.Conn]struct{} // open upstream connections by server

	ln net.Listener
	component.Runner
}

// New returns a load balancer that will listen on addr (127.0.0.1:port) and
// forward to servers (host:port).
func New(addr string, servers []string, log *slog.Logger) *LB {
	return &LB{addr: addr, servers: slices.Clone(servers), log: log.With("component", "loadbalancer")}
}

func (l *LB) Name() string { return "loadbalancer" }

// Init opens the port, so that a port in use fails start-up.
func (l *LB) Init(context.Context) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("load balancer: listening on %s: %w", l.addr, err)
	}
	l.ln = ln
	return nil
}

// Addr is where the load balancer listens.
func (l *LB) Addr() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

func (l *LB) Start(context.Context) error {
	l.Go(func(ctx context.Context) error {
		go func() { <-ctx.Done(); l.ln.Close() }()
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			conn, err := l.ln.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("load balancer: %w", err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.serve(ctx, conn)
			}()
		}
	})
	return nil
}

func (l *LB) Ready() error {
	if !l.Running() {
		return errors.New("not serving")
	}
	return nil
}

func (l *LB) Stop() error {
	err := l.Runner.Stop(5 * time.Second)
	if l.ln != nil {
		l.ln.Close()
	}
	return err
}

// Servers returns the current server list.
func (l *LB) Servers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.servers)
}

// SetServers replaces the server list; open connections are left alone.
func (l *LB) SetServers(servers []string) {
	if len(servers) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if slices.Equal(servers, l.servers) {
		return
	}
	cur := ""
	if l.next < len(l.servers) {
		cur = l.servers[l.next]
	}
	l.servers = slices.Clone(servers)
	l.next = max(0, slices.Index(l.servers, cur))
	l.log.Info("servers", "list", servers)
	for srv, open := range l.conns {
		if slices.Contains(l.servers, srv) {
			continue
		}
		if len(open) > 0 {
			l.log.Info("server left: closing its connections", "server", srv, "connections", len(open))
		}
		for c := range open {
			c.Close()
		}
		delete(l.conns, srv)
	}
}

// track records an open connection to server; untrack forgets it.
func (l *LB) track(server string, c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.servers, server) {
		// Dropped from the list while dialling.
		c.Close()
		return
	}
	if l.conns == nil {
		l.conns = map[string]map[net.Conn]struct{}{}
	}
	if l.conns[server] == nil {
		l.conns[server] = map[net.Conn]struct{}{}
	}
	l.conns[server][c] = struct{}{}
}

func (l *LB) untrack(server string, c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns[server], c)
}

// dial tries every server, starting with the one that answered last, and
// returns the connection and the server it reached.
func (l *LB) dial(ctx context.Context) (net.Conn, string, error) {
	l.mu.Lock()
	servers, start := slices.Clone(l.servers), l.next
	l.mu.Unlock()
	var errs []error
	for i := range servers {
		idx := (start + i) % len(servers)
		d := net.Dialer{Timeout: dialTimeout}
		conn, err := d.DialContext(ctx, "tcp", servers[idx])
		if err == nil {
			if i > 0 {
				l.log.Warn("server did not answer, using the next", "failed", servers[start%len(servers)], "now", servers[idx])
				l.mu.Lock()
				if idx < len(l.servers) && l.servers[idx] == servers[idx] {
					l.next = idx
				}
				l.mu.Unlock()
			}
			return conn, servers[idx], nil
		}
		errs = append(errs, err)
	}
	return nil, "", fmt.Errorf("no server answered: %w", errors.Join(errs...))
}

func (l *LB) serve(ctx context.Context, client net.Conn) {
	upstream, server, err := l.dial(ctx)
	if err != nil {
		client.Close()
		l.log.Debug("dropping connection", "err", err)
		return
	}
	l.track(server, upstream)
	defer l.untrack(server, upstream)
	netutil.Splice(ctx, client, upstream)
}
