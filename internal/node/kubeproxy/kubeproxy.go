// Package kubeproxy runs kube-proxy in process, configured by flags only: a config
// file would make kube-proxy ignore the user's --kube-proxy-arg values.
package kubeproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/klog/v2"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"

	"github.com/skiffkube/skiff/internal/component"
)

// Config is what kube-proxy runs with.
type Config struct {
	Args []string
}

// KubeProxy is the component.
type KubeProxy struct {
	cfg  Config
	log  *slog.Logger
	opts *proxyapp.Options
	component.Runner
}

// New returns the component.
func New(cfg Config, log *slog.Logger) *KubeProxy {
	return &KubeProxy{cfg: cfg, log: log.With("component", "kube-proxy")}
}

func (p *KubeProxy) Name() string { return "kube-proxy" }

func (p *KubeProxy) Init(context.Context) error {
	o := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	fs.SetOutput(io.Discard)
	o.AddFlags(fs)
	if err := fs.Parse(p.cfg.Args); err != nil {
		return fmt.Errorf("kube-proxy arguments (set through --kube-proxy-arg): %w", err)
	}
	if o.ConfigFile != "" || o.WriteConfigTo != "" || o.CleanupAndExit || o.InitAndExit {
		return fmt.Errorf("kube-proxy arguments (set through --kube-proxy-arg): config, write-config-to, cleanup and init-only are not supported")
	}
	if err := o.Complete(fs); err != nil {
		return fmt.Errorf("kube-proxy: %w", err)
	}
	if err := o.Validate(); err != nil {
		return fmt.Errorf("kube-proxy configuration: %w", err)
	}
	p.opts = o
	return nil
}

func (p *KubeProxy) Start(context.Context) error {
	p.Go(func(ctx context.Context) error {
		errCh := make(chan error, 1)
		// Run does not return when its context ends; the process exit ends it.
		go func() {
			// Guarded: a panic here is kube-proxy's error, not the process's end.
			errCh <- component.Safely(func() error {
				return p.opts.Run(klog.NewContext(ctx, klog.LoggerWithName(klog.FromContext(ctx), "kube-proxy")))
			})
		}()
		select {
		case err := <-errCh:
			return fmt.Errorf("kube-proxy: %w", err)
		case <-ctx.Done():
			return nil
		}
	})
	return nil
}

// Ready is nil once kube-proxy's health endpoint answers.
func (p *KubeProxy) Ready() error {
	if !p.Running() {
		return fmt.Errorf("not running")
	}
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get("http://" + healthAddress(p.cfg.Args) + "/livez")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("livez %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

func (p *KubeProxy) Stop() error { return p.Runner.Stop(5 * time.Second) }

// healthAddress is where kube-proxy's health server listens: the last
// --healthz-bind-address in args (a user's --kube-proxy-arg comes last), with an
// unspecified host probed on loopback.
func healthAddress(args []string) string {
	addr := "127.0.0.1:10256"
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--healthz-bind-address="); ok {
			addr = v
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "127.0.0.1:10256"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
