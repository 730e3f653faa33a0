package cloudnode

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	nodecontroller "k8s.io/cloud-provider/controllers/node"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"

	"github.com/skiffkube/skiff/internal/addons"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
)

// Addon runs the cloud node controller on one elected server.
var Addon = addons.Addon{
	Name:      "cloud-node-controller",
	Disabled:  func(*config.Server) bool { return false },
	Placement: addons.OneElectedServer,
	Components: func(e *addons.Env) []component.Component {
		return []component.Component{New(Config{Kubeconfig: e.Kubeconfig()}, e.Log)}
	},
}

// StatusUpdateFrequency is how often the controller reconciles every
// initialised node's addresses with the provider's: how soon a node that
// was already registered when it was given --node-external-ip shows it.
// For the other nodes a round is a list from the informer's cache and no
// request.
const StatusUpdateFrequency = 10 * time.Second

// Config says which cluster to run in.
type Config struct {
	// Kubeconfig may watch, update and patch Nodes (the admin's).
	Kubeconfig string
	// Client, when set, is used instead of Kubeconfig.
	Client kubernetes.Interface
	// StatusUpdateFrequency, when set, replaces StatusUpdateFrequency.
	StatusUpdateFrequency time.Duration
}

// Controller is the component.
type Controller struct {
	cfg Config
	log *slog.Logger
	component.Runner
}

// New returns the component.
func New(cfg Config, log *slog.Logger) *Controller {
	return &Controller{cfg: cfg, log: log.With("component", "cloud-node-controller")}
}

func (c *Controller) Name() string               { return "cloud-node-controller" }
func (c *Controller) Init(context.Context) error { return nil }
func (c *Controller) Ready() error               { return nil }
func (c *Controller) Stop() error                { return c.Runner.Stop(5 * time.Second) }

func (c *Controller) Start(context.Context) error {
	client := c.cfg.Client
	if client == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("cloud-node-controller: loading %s: %w", c.cfg.Kubeconfig, err)
		}
		if client, err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("cloud-node-controller: %w", err)
		}
	}
	f := informers.NewSharedInformerFactory(client, 0)
	every := c.cfg.StatusUpdateFrequency
	if every == 0 {
		every = StatusUpdateFrequency
	}
	cnc, err := nodecontroller.NewCloudNodeController(f.Core().V1().Nodes(), client, Provider{}, every, 1, 1)
	if err != nil {
		return fmt.Errorf("cloud-node-controller: %w", err)
	}
	c.Go(func(ctx context.Context) error {
		f.Start(ctx.Done())
		defer f.Shutdown()
		cnc.RunWithContext(ctx, controllersmetrics.NewControllerManagerMetrics("skiff"))
		return ctx.Err()
	})
	return nil
}
