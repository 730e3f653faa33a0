// Package apiserver runs kube-apiserver in process, through its library entry
// points, with a context of ours (its cobra command would install a process
// signal handler that may exist only once per process).
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/control/args"
	"github.com/skiffkube/skiff/internal/control/probe"
)

// Config is what the apiserver component needs.
type Config struct {
	// Args is the full kube-apiserver command line (see args.Build).
	Args []string
	// ReadyzURL is the loopback /readyz URL, probed with the client
	// certificate below and verified against CAFile.
	ReadyzURL      string
	CAFile         string
	ClientCertFile string
	ClientKeyFile  string
	// EndpointPort, when not 0, is the port the `kubernetes` Service's
	// endpoints name (the supervisor's) instead of the apiserver's own.
	EndpointPort int
}

// APIServer is the kube-apiserver component.
type APIServer struct {
	cfg     Config
	log     *slog.Logger
	opts    *options.ServerRunOptions
	handler atomic.Pointer[http.Handler]
	client  *http.Client
	component.Runner
}

// New returns the apiserver component.
func New(cfg Config, log *slog.Logger) *APIServer {
	return &APIServer{cfg: cfg, log: log.With("component", "apiserver")}
}

func (a *APIServer) Name() string { return "apiserver" }

// Init parses the command line with kube-apiserver's own flags, so every
// upstream flag works through --kube-apiserver-arg.
func (a *APIServer) Init(context.Context) error {
	a.opts = options.NewServerRunOptions()
	if err := args.Parse("kube-apiserver", "kube-apiserver-arg", a.opts.Flags(), a.cfg.Args); err != nil {
		return err
	}
	if err := a.opts.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("applying feature gates: %w", err)
	}
	// The apiserver's loopback clients would otherwise log its own
	// deprecation warnings back at it.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	c, err := probe.Client(a.cfg.CAFile, a.cfg.ClientCertFile, a.cfg.ClientKeyFile)
	if err != nil {
		return err
	}
	a.client = c
	return nil
}

func (a *APIServer) Start(context.Context) error {
	a.Go(a.run)
	return nil
}

func (a *APIServer) run(ctx context.Context) error {
	completed, err := a.opts.Complete(ctx)
	if err != nil {
		return fmt.Errorf("completing options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return fmt.Errorf("invalid kube-apiserver arguments: %w", utilerrors.NewAggregate(errs))
	}
	config, err := app.NewConfig(completed)
	if err != nil {
		return fmt.Errorf("building config: %w", err)
	}
	cc, err := config.Complete()
	if err != nil {
		return fmt.Errorf("completing config: %w", err)
	}
	if a.cfg.EndpointPort != 0 {
		ep := &cc.KubeAPIs.Extra.EndpointReconcilerConfig
		ep.Reconciler = publishedPort{EndpointReconciler: ep.Reconciler, port: int32(a.cfg.EndpointPort)}
	}
	chain, err := app.CreateServerChain(cc)
	if err != nil {
		return fmt.Errorf("creating server chain: %w", err)
	}
	prepared, err := chain.PrepareRun()
	if err != nil {
		return fmt.Errorf("preparing to run: %w", err)
	}
	// The supervisor serves this same handler on the public port, so a
	// request there is authenticated from its own TLS state and headers
	// without a second hop.
	h := http.Handler(chain.GenericAPIServer.Handler)
	a.handler.Store(&h)
	return prepared.Run(ctx)
}

// Handler is the apiserver's full handler chain, or nil before it is built.
func (a *APIServer) Handler() http.Handler {
	if h := a.handler.Load(); h != nil {
		return *h
	}
	return nil
}

func (a *APIServer) Ready() error {
	if a.Handler() == nil {
		return errors.New("apiserver is still building its handler chain")
	}
	return probe.Get(a.client, a.cfg.ReadyzURL)
}

func (a *APIServer) Stop() error {
	return a.Runner.Stop(8 * time.Second)
}
