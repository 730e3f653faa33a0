package addons

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/skiffkube/skiff/internal/component"
)

// A Service served in process (CoreDNS, metrics-server) has no selector: each
// server that serves it writes one EndpointSlice with its own address,
//
//	<service>-skiff-<server>, labels kubernetes.io/service-name=<service>,
//	endpointslice.kubernetes.io/managed-by=skiff.io, skiff.io/server=<server>
//
// so kube-proxy and the aggregator see every server. A server removes its
// slices when it stops; the slices of a server that died are removed by one
// elected server (EndpointsReaper), once its address has left the endpoints
// of the `kubernetes` Service: the apiserver's lease reconciler keeps there
// exactly the servers whose apiserver renewed its lease in the last 15 s.
const (
	// ManagedBy marks the slices skiff writes for in-process Services.
	ManagedBy = "skiff.io"
	// ServerLabel names the server a slice points at.
	ServerLabel = "skiff.io/server"
)

// publishInterval is how often a server checks its slices (a hand edit or
// deletion is put back within it).
const publishInterval = 10 * time.Second

// EndpointsConfig is what the publisher and the reaper need.
type EndpointsConfig struct {
	Kubeconfig string
	// Client, when set, replaces the kubeconfig (tests).
	Client kubernetes.Interface
	// Server names this server; IP is where it serves.
	Server   string
	IP       net.IP
	Services []Service
	Election Election
}

func (c *EndpointsConfig) connect() (kubernetes.Interface, error) {
	if c.Client != nil {
		return c.Client, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", c.Kubeconfig, err)
	}
	return kubernetes.NewForConfig(rc)
}

// SliceName is the EndpointSlice through which server serves service.
func SliceName(service, server string) string {
	return service + "-skiff-" + strings.ToLower(server)
}

// Endpoints is the every-server component that publishes this server's
// slices for the Services it serves, and deletes those of Services it no
// longer serves (a disabled add-on).
type Endpoints struct {
	cfg     EndpointsConfig
	log     *slog.Logger
	client  kubernetes.Interface
	synced  atomic.Bool
	lastErr atomic.Pointer[error]
	component.Runner
}

// NewEndpoints returns the publisher.
func NewEndpoints(cfg EndpointsConfig, log *slog.Logger) *Endpoints {
	return &Endpoints{cfg: cfg, log: log.With("component", "server-endpoints")}
}

func (p *Endpoints) Name() string { return "server-endpoints" }

func (p *Endpoints) Init(context.Context) error {
	c, err := p.cfg.connect()
	p.client = c
	return err
}

func (p *Endpoints) Start(context.Context) error {
	p.Go(func(ctx context.Context) error {
		t := time.NewTicker(publishInterval)
		defer t.Stop()
		for {
			if err := Publish(ctx, p.client, p.cfg.Server, p.cfg.IP, p.cfg.Services); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				p.lastErr.Store(&err)
				p.log.Debug("publishing", "err", err)
			} else {
				p.synced.Store(true)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	return nil
}

func (p *Endpoints) Ready() error {
	if p.synced.Load() {
		return nil
	}
	if err := p.lastErr.Load(); err != nil {
		return *err
	}
	return errors.New("endpoint slices not written yet")
}

// Stop stops publishing and takes this server's slices away, so that
// clients stop being sent to it at once rather than when it is found dead.
func (p *Endpoints) Stop() error {
	err := p.Runner.Stop(3 * time.Second)
	if p.client == nil || !p.synced.Load() {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if rerr := Publish(ctx, p.client, p.cfg.Server, p.cfg.IP, nil); rerr != nil {
		p.log.Debug("removing this server's endpoint slices", "err", rerr)
	}
	return err
}

// Publish makes server's slices say that it serves services at ip, and
// deletes its slices of any other Service.
func Publish(ctx context.Context, c kubernetes.Interface, server string, ip net.IP, services []Service) error {
	want := map[string]bool{}
	for _, s := range services {
		want[s.Namespace+"/"+SliceName(s.Name, server)] = true
		if err := publishSlice(ctx, c, server, ip, s); err != nil {
			return fmt.Errorf("endpoint slice of %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	sel := labels.Set{discoveryv1.LabelManagedBy: ManagedBy, ServerLabel: strings.ToLower(server)}.String()
	list, err := c.DiscoveryV1().EndpointSlices(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return fmt.Errorf("listing endpoint slices: %w", err)
	}
	for _, s := range list.Items {
		if want[s.Namespace+"/"+s.Name] {
			continue
		}
		if err := c.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting endpoint slice %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	return nil
}

func publishSlice(ctx context.Context, c kubernetes.Interface, server string, ip net.IP, s Service) error {
	family := discoveryv1.AddressTypeIPv4
	if ip.To4() == nil {
		family = discoveryv1.AddressTypeIPv6
	}
	want := discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      SliceName(s.Name, server),
			Namespace: s.Namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: s.Name,
				discoveryv1.LabelManagedBy:   ManagedBy,
				ServerLabel:                  strings.ToLower(server),
			},
		},
		AddressType: family,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{ip.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}},
	}
	for _, p := range s.Ports {
		want.Ports = append(want.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Protocol: ptr.To(p.Protocol), Port: ptr.To(p.Port)})
	}
	api := c.DiscoveryV1().EndpointSlices(s.Namespace)
	cur, err := api.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = api.Create(ctx, &want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if cur.AddressType != family {
		// The address type cannot change: replace the slice.
		if err := api.Delete(ctx, cur.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		_, err = api.Create(ctx, &want, metav1.CreateOptions{})
		return err
	}
	if reflect.DeepEqual(cur.Endpoints, want.Endpoints) && reflect.DeepEqual(cur.Ports, want.Ports) && labelsHold(cur.Labels, want.Labels) {
		return nil
	}
	cur.Endpoints, cur.Ports = want.Endpoints, want.Ports
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	for k, v := range want.Labels {
		cur.Labels[k] = v
	}
	_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

func labelsHold(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// EndpointsReaper is the elected component that deletes the slices of
// servers that are gone: a slice is deleted once its address is not among
// the `kubernetes` Service's endpoints and the slice is older than a lease
// duration (a server that just started may not be listed yet).
type EndpointsReaper struct {
	cfg    EndpointsConfig
	log    *slog.Logger
	client kubernetes.Interface
	now    func() time.Time
	component.Runner
}

// NewEndpointsReaper returns the reaper.
func NewEndpointsReaper(cfg EndpointsConfig, log *slog.Logger) *EndpointsReaper {
	if cfg.Election == (Election{}) {
		cfg.Election = DefaultElection
	}
	return &EndpointsReaper{cfg: cfg, log: log.With("component", "server-endpoints"), now: time.Now}
}

func (r *EndpointsReaper) Name() string { return "server-endpoints-reaper" }

func (r *EndpointsReaper) Init(context.Context) error {
	c, err := r.cfg.connect()
	r.client = c
	return err
}

func (r *EndpointsReaper) Start(context.Context) error {
	r.Go(func(ctx context.Context) error {
		t := time.NewTicker(r.cfg.Election.RetryPeriod)
		defer t.Stop()
		for {
			if n, err := Reap(ctx, r.client, r.now(), r.cfg.Election.LeaseDuration); err != nil && ctx.Err() == nil {
				r.log.Debug("removing dead servers' endpoint slices", "err", err)
			} else if n > 0 {
				r.log.Info("removed the endpoint slices of servers that are gone", "slices", n)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	return nil
}

func (r *EndpointsReaper) Ready() error { return nil }
func (r *EndpointsReaper) Stop() error  { return r.Runner.Stop(3 * time.Second) }

// LiveServers are the addresses the `kubernetes` Service's endpoints list:
// the servers whose apiserver holds a live lease.
func LiveServers(ctx context.Context, c kubernetes.Interface) (map[string]bool, error) {
	//nolint:staticcheck // Endpoints is deprecated, but it is what the apiserver's reconciler writes first.
	ep, err := c.CoreV1().Endpoints(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	live := map[string]bool{}
	for _, sub := range ep.Subsets {
		for _, a := range sub.Addresses {
			live[a.IP] = true
		}
	}
	return live, nil
}

// Reap deletes the skiff-managed slices that point at no live server and are
// older than grace, and returns how many it deleted. With no live server
// listed at all (the endpoint reconciler turned off) it deletes nothing.
func Reap(ctx context.Context, c kubernetes.Interface, now time.Time, grace time.Duration) (int, error) {
	live, err := LiveServers(ctx, c)
	if err != nil {
		return 0, fmt.Errorf("reading the kubernetes Service's endpoints: %w", err)
	}
	if len(live) == 0 {
		return 0, nil
	}
	sel := labels.Set{discoveryv1.LabelManagedBy: ManagedBy}.String()
	list, err := c.DiscoveryV1().EndpointSlices(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return 0, fmt.Errorf("listing endpoint slices: %w", err)
	}
	n := 0
	var errs []error
	for _, s := range list.Items {
		if s.Labels[ServerLabel] == "" || now.Sub(s.CreationTimestamp.Time) < grace || servesLive(&s, live) {
			continue
		}
		err := c.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &s.UID},
		})
		switch {
		case err == nil:
			n++
		case !apierrors.IsNotFound(err) && !apierrors.IsConflict(err):
			errs = append(errs, fmt.Errorf("deleting endpoint slice %s/%s: %w", s.Namespace, s.Name, err))
		}
	}
	return n, errors.Join(errs...)
}

func servesLive(s *discoveryv1.EndpointSlice, live map[string]bool) bool {
	for _, e := range s.Endpoints {
		for _, a := range e.Addresses {
			if live[a] {
				return true
			}
		}
	}
	return false
}
