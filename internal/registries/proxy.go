package registries

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Proxy serves the rewrite routes on loopback, one listener each: containerd
// pulls from http://127.0.0.1:port as from the mirror endpoint, and the proxy
// forwards each request to the endpoint (with the endpoint's TLS settings)
// after mapping the repository name in the path by the mirror's rewrite
// rules. Everything else (the Authorization header containerd adds with the
// credentials skiff gives it for the proxy's host, challenges, redirects)
// passes through unchanged. The proxy adds no credentials, and it answers
// only requests that carry the token containerd is given for it in
// hosts.toml (ProxyHeader), so that no other local process can use the
// TLS client certificate it presents to the endpoint.
//
// containerd (2.x) has no rewrite rules of its own and its hosts.toml maps
// hosts, not names, so the rewrite happens here, in skiff, between
// containerd and the endpoint.
type Proxy struct {
	log       *slog.Logger
	tokens    []string
	listeners []net.Listener
	servers   []*http.Server
	wg        sync.WaitGroup
	failed    chan error
}

// Listen opens one loopback listener per route. Addrs() are their
// host:port, in the routes' order.
func Listen(routes []Route, log *slog.Logger) (*Proxy, error) {
	p := &Proxy{log: log.With("component", "registries"), failed: make(chan error, 1)}
	for _, rt := range routes {
		tlsCfg, err := ClientTLS(rt.TLS)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("registries: TLS for %s: %w", rt.Endpoint, err)
		}
		tok := make([]byte, 32)
		if _, err := rand.Read(tok); err != nil {
			p.Close()
			return nil, fmt.Errorf("registries: %w", err)
		}
		token := hex.EncodeToString(tok)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("registries: rewrite proxy for %s: %w", rt.Endpoint, err)
		}
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.TLSClientConfig = tlsCfg
		p.listeners = append(p.listeners, l)
		p.tokens = append(p.tokens, token)
		p.servers = append(p.servers, &http.Server{
			Handler:           p.handler(rt, transport, token),
			ReadHeaderTimeout: 30 * time.Second,
			ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		})
	}
	return p, nil
}

// ProxyHeader carries a proxy's token from containerd to the proxy.
const ProxyHeader = "X-Skiff-Registry-Proxy"

// Endpoint is where one route's proxy listens and the token it wants.
type Endpoint struct {
	// Addr is host:port on loopback.
	Addr  string
	Token string
}

// Endpoints are the listeners, in the routes' order.
func (p *Proxy) Endpoints() []Endpoint {
	var out []Endpoint
	for i, l := range p.listeners {
		out = append(out, Endpoint{Addr: l.Addr().String(), Token: p.tokens[i]})
	}
	return out
}

// apiPath is a distribution API path: /v2/<name>/<kind>/<rest>.
var apiPath = regexp.MustCompile(`^/v2/(.+?)/(manifests|blobs|tags|referrers)(/.*)?$`)

// RewritePath maps the repository name in a distribution API path by the
// first rule (in pattern order) that matches it; other paths are returned
// as they are.
func RewritePath(path string, rules []Rewrite) string {
	m := apiPath.FindStringSubmatch(path)
	if m == nil {
		return path
	}
	name := m[1]
	for _, r := range rules {
		if r.Re.MatchString(name) {
			name = r.Re.ReplaceAllString(name, r.Replacement)
			break
		}
	}
	return "/v2/" + name + "/" + m[2] + m[3]
}

func (p *Proxy) handler(rt Route, transport http.RoundTripper, token string) http.Handler {
	base := strings.TrimSuffix(rt.Endpoint.Path, "/")
	base = strings.TrimSuffix(base, "/v2")
	rp := &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			path := RewritePath(pr.In.URL.Path, rt.Rewrites)
			if path != pr.In.URL.Path {
				p.log.Debug("rewrite", "registry", rt.Registry, "endpoint", rt.Endpoint.String(), "from", pr.In.URL.Path, "to", path)
			}
			pr.Out.URL.Scheme = rt.Endpoint.Scheme
			pr.Out.URL.Host = rt.Endpoint.Host
			pr.Out.URL.Path = base + path
			pr.Out.URL.RawPath = ""
			pr.Out.Host = rt.Endpoint.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.log.Warn("mirror endpoint unreachable", "registry", rt.Registry, "endpoint", rt.Endpoint.String(), "err", err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(ProxyHeader)), []byte(token)) != 1 {
			http.Error(w, "skiff registry proxy: for skiff's containerd only", http.StatusForbidden)
			return
		}
		r.Header.Del(ProxyHeader)
		rp.ServeHTTP(w, r)
	})
}

// Name, Init, Start, Ready, Stop and Failed make the proxy a node component.
func (p *Proxy) Name() string               { return "registry-rewrite" }
func (p *Proxy) Init(context.Context) error { return nil }
func (p *Proxy) Ready() error               { return nil }
func (p *Proxy) Failed() <-chan error       { return p.failed }

// Start serves every listener until Stop.
func (p *Proxy) Start(context.Context) error {
	for i := range p.servers {
		s, l := p.servers[i], p.listeners[i]
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				select {
				case p.failed <- fmt.Errorf("registry rewrite proxy %s: %w", l.Addr(), err):
				default:
				}
			}
		}()
	}
	return nil
}

// Stop closes the listeners and open connections.
func (p *Proxy) Stop() error {
	p.Close()
	p.wg.Wait()
	return nil
}

// Close closes the listeners (of a proxy that was never started, too).
func (p *Proxy) Close() {
	for i, l := range p.listeners {
		if i < len(p.servers) {
			p.servers[i].Close()
		}
		l.Close()
	}
}
