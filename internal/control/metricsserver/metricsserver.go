// Package metricsserver serves the resource metrics API (metrics.k8s.io,
// `kubectl top`) from the server process: sigs.k8s.io/metrics-server as a
// library, instead of the pod and image K3s deploys.
//
// It scrapes every kubelet's /metrics/resource through the tunnel dialler,
// so agents' loopback-only kubelets are reached like the apiserver reaches
// them. The aggregated API is registered by an APIService whose Service has
// no selector: every server's EndpointSlice names its address and Port, and
// the apiserver routes to endpoints directly (--enable-aggregator-routing).
package metricsserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"k8s.io/klog/v2"
	"sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"

	"github.com/skiffkube/skiff/internal/component"
)

// DefaultPort is where the metrics API listens on the server's address.
const DefaultPort = 10251

// ManifestFile is the add-on's file in the manifests dir.
const ManifestFile = "metrics-server.yaml"

// Config is what the metrics server needs.
type Config struct {
	Kubeconfig string
	// ListenIP and Port: the address the EndpointSlice names.
	ListenIP net.IP
	Port     int
	// CertDir holds its self-signed serving certificate.
	CertDir string
	// Dial reaches kubelets (through agents' tunnels).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Resolution is the scrape interval.
	Resolution time.Duration
}

// Server is the metrics-server component.
type Server struct {
	cfg Config
	log *slog.Logger
	component.Runner
}

// New returns the component.
func New(cfg Config, log *slog.Logger) *Server {
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Resolution == 0 {
		cfg.Resolution = 15 * time.Second
	}
	return &Server{cfg: cfg, log: log.With("component", "metrics-server")}
}

func (s *Server) Name() string               { return "metrics-server" }
func (s *Server) Init(context.Context) error { return nil }

func (s *Server) Start(context.Context) error {
	o := options.NewOptions()
	o.Kubeconfig = s.cfg.Kubeconfig
	o.MetricResolution = s.cfg.Resolution
	o.SecureServing.BindAddress = s.cfg.ListenIP
	o.SecureServing.BindPort = s.cfg.Port
	o.SecureServing.ServerCert.CertDirectory = s.cfg.CertDir
	o.SecureServing.ServerCert.PairName = "metrics-server"
	o.KubeletClient.KubeletPreferredAddressTypes = []string{"InternalIP", "ExternalIP", "Hostname"}
	// Not in a pod: delegated authentication and authorization use the
	// server's kubeconfig instead of the in-cluster one.
	o.Authentication.RemoteKubeConfigFile = s.cfg.Kubeconfig
	o.Authorization.RemoteKubeConfigFile = s.cfg.Kubeconfig
	// Options.Validate is not called: besides checking flags skiff sets
	// itself, it applies metrics-server's logging config, which would take
	// klog over process-wide. The routing is also put back after building,
	// in case a later version does that elsewhere.
	skiffKlog := klog.Background()
	defer klog.SetLoggerWithOptions(skiffKlog, klog.ContextualLogger(true))
	cfg, err := o.ServerConfig()
	if err != nil {
		return fmt.Errorf("metrics-server config: %w", err)
	}
	if s.cfg.Dial != nil {
		cfg.Kubelet.Client.Dial = s.cfg.Dial
	}
	srv, err := cfg.Complete()
	if err != nil {
		return fmt.Errorf("metrics-server: %w", err)
	}
	s.Go(func(ctx context.Context) error {
		if err := srv.RunUntil(ctx.Done()); err != nil && ctx.Err() == nil {
			return fmt.Errorf("metrics-server on %s: %w", net.JoinHostPort(s.cfg.ListenIP.String(), strconv.Itoa(s.cfg.Port)), err)
		}
		return nil
	})
	return nil
}

// Ready at once: the first scrape takes a resolution interval, and nothing
// at start-up depends on it.
func (s *Server) Ready() error { return nil }

func (s *Server) Stop() error { return s.Runner.Stop(5 * time.Second) }

// Manifest is the APIService and its Service, which has no selector: every
// server publishes an EndpointSlice with its address (package addons).
func Manifest(Config) []byte {
	return []byte(`# Written by skiff at every start; create metrics-server.yaml.skip to manage it yourself.
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {name: metrics-server, namespace: kube-system, port: 443}
  groupPriorityMinimum: 100
  versionPriority: 100
  # The metrics server's certificate is self-signed, as K3s's is.
  insecureSkipTLSVerify: true
---
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {k8s-app: metrics-server}
spec:
  ports:
  - {name: https, port: 443, protocol: TCP}
`)
}
