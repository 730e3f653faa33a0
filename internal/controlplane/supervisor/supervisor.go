// Package supervisor serves skiff's one public TLS port: the unauthenticated
// bootstrap endpoints (/cacerts, /ping) and, for everything else, the
// kube-apiserver's own handler chain.
//
// The apiserver handler is called in process rather than reverse-proxied to
// its loopback port: the request's TLS state (client certificate) and headers
// reach the apiserver's authenticators unchanged, upgraded connections (exec,
// attach, port-forward over SPDY or websocket) and watches work as they do on
// the apiserver's own port, and no second TLS hop is paid.
package supervisor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/pki"
)

// Config is what the supervisor needs.
type Config struct {
	// Listener is the public TCP listener, opened before start-up so that a
	// port in use fails before anything is written.
	Listener net.Listener
	// CertFile and KeyFile are the serving certificate (apiserver SANs).
	CertFile, KeyFile string
	// ServerCAFile is served at /cacerts, byte for byte as the token hashes it.
	ServerCAFile string
	// ClientCAFile lets the TLS layer ask for client certificates; the
	// apiserver's authenticator verifies them.
	ClientCAFile string
	// APIServer returns the apiserver handler, nil while it is not built.
	APIServer func() http.Handler
	// Routes are the supervisor's own endpoints by ServeMux pattern (agents'
	// join and tunnel); they take precedence over the apiserver.
	Routes map[string]http.Handler
}

// Supervisor is the public port component.
type Supervisor struct {
	cfg   Config
	caPEM []byte
	log   *slog.Logger
	srv   *http.Server
	component.Runner
}

// New returns the supervisor component.
func New(cfg Config, log *slog.Logger) *Supervisor {
	return &Supervisor{cfg: cfg, log: log.With("component", "supervisor")}
}

func (s *Supervisor) Name() string { return "supervisor" }

func (s *Supervisor) Init(context.Context) error {
	if s.cfg.Listener == nil {
		return errors.New("no listener")
	}
	caPEM, err := os.ReadFile(s.cfg.ServerCAFile)
	if err != nil {
		return fmt.Errorf("reading server CA: %w", err)
	}
	s.caPEM = caPEM
	// Loaded again whenever the files change: a renewed certificate is
	// served from the next handshake on, without a restart.
	cert, err := pki.NewKeyPairReloader(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("loading serving certificate: %w", err)
	}
	tc := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: cert.GetCertificate,
		// Requested, not verified here: the apiserver's x509 authenticator
		// verifies against its client CA, and /cacerts must work without one.
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"h2", "http/1.1"},
	}
	if s.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(s.cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("reading client CA: %w", err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		// Tells clients which client certificates are acceptable.
		tc.ClientCAs = pool
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         tc,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          log.New(debugWriter{s.log}, "", 0),
	}
	return nil
}

// Handler routes the supervisor's paths; exported for tests.
func (s *Supervisor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cacerts", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(s.caPEM)
	})
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "pong")
	})
	for pattern, h := range s.cfg.Routes {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := s.cfg.APIServer()
		if h == nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "apiserver not ready", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
	return mux
}

func (s *Supervisor) Start(context.Context) error {
	s.Go(func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- s.srv.ServeTLS(s.cfg.Listener, "", "") }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			// Watches never finish on their own, so the grace is short; clients
			// (the node's kubelet among them) reconnect.
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if err := s.srv.Shutdown(sctx); err != nil {
				_ = s.srv.Close()
			}
			return ctx.Err()
		}
	})
	return nil
}

func (s *Supervisor) Ready() error {
	if !s.Running() {
		return errors.New("not serving")
	}
	return nil
}

func (s *Supervisor) Stop() error {
	err := s.Runner.Stop(5 * time.Second)
	if s.srv == nil {
		// Never started: the listener is still ours to close.
		_ = s.cfg.Listener.Close()
	}
	return err
}

// debugWriter sends net/http's own complaints (TLS handshake errors from
// port scanners, say) to debug level.
type debugWriter struct{ log *slog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug(string(p))
	return len(p), nil
}
