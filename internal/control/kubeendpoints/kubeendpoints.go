// Package kubeendpoints keeps the endpoints of the `kubernetes` Service
// pointing at the supervisor's public port.
//
// The apiserver's own reconciler publishes the port it listens on, which in
// skiff is a loopback-only port; pods that dial kubernetes.default would be
// sent to an address nobody answers on. So the apiserver runs with
// --endpoint-reconciler-type=none and this component publishes
// <advertise address>:<https-listen-port> instead.
package kubeendpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/skiffkube/skiff/internal/component"
)

const (
	name      = "kubernetes"
	namespace = metav1.NamespaceDefault
	portName  = "https"
	// interval matches the apiserver's own reconciler: a hand edit is put
	// back within seconds.
	interval = 10 * time.Second
)

// Config is what the component publishes and how it reaches the API.
type Config struct {
	Kubeconfig  string
	AdvertiseIP net.IP
	Port        int
}

// Reconciler is the component.
type Reconciler struct {
	cfg     Config
	log     *slog.Logger
	client  kubernetes.Interface
	synced  atomic.Bool
	lastErr atomic.Pointer[error]
	component.Runner
}

// New returns the component.
func New(cfg Config, log *slog.Logger) *Reconciler {
	return &Reconciler{cfg: cfg, log: log.With("component", "kubernetes-endpoints")}
}

func (r *Reconciler) Name() string { return "kubernetes-endpoints" }

func (r *Reconciler) Init(context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", r.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("loading %s: %w", r.cfg.Kubeconfig, err)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	r.client = c
	return nil
}

func (r *Reconciler) Start(context.Context) error {
	r.Go(func(ctx context.Context) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if err := Reconcile(ctx, r.client, r.cfg.AdvertiseIP, r.cfg.Port); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.lastErr.Store(&err)
				r.log.Debug("reconciling", "err", err)
			} else {
				r.synced.Store(true)
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

func (r *Reconciler) Ready() error {
	if r.synced.Load() {
		return nil
	}
	if err := r.lastErr.Load(); err != nil {
		return *err
	}
	return errors.New("endpoints not written yet")
}

func (r *Reconciler) Stop() error { return r.Runner.Stop(3 * time.Second) }

// Reconcile writes the Endpoints and EndpointSlice of the kubernetes
// Service, leaving them alone when they already say the right thing.
func Reconcile(ctx context.Context, c kubernetes.Interface, ip net.IP, port int) error {
	if err := reconcileEndpoints(ctx, c, ip, port); err != nil {
		return fmt.Errorf("endpoints: %w", err)
	}
	if err := reconcileSlice(ctx, c, ip, port); err != nil {
		return fmt.Errorf("endpointslice: %w", err)
	}
	return nil
}

func reconcileEndpoints(ctx context.Context, c kubernetes.Interface, ip net.IP, port int) error {
	//nolint:staticcheck // Endpoints is deprecated but still read by clients; upstream writes both.
	want := []corev1.EndpointSubset{{
		Addresses: []corev1.EndpointAddress{{IP: ip.String()}},
		Ports:     []corev1.EndpointPort{{Name: portName, Port: int32(port), Protocol: corev1.ProtocolTCP}},
	}}
	api := c.CoreV1().Endpoints(namespace)
	cur, err := api.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = api.Create(ctx, &corev1.Endpoints{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: endpointsLabels()},
			Subsets:    want,
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if reflect.DeepEqual(cur.Subsets, want) && cur.Labels[discoveryv1.LabelSkipMirror] == "true" {
		return nil
	}
	cur.Subsets = want
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	for k, v := range endpointsLabels() {
		cur.Labels[k] = v
	}
	_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// The slice is written here, so the mirroring controller must not make a
// second one from the Endpoints.
func endpointsLabels() map[string]string {
	return map[string]string{discoveryv1.LabelSkipMirror: "true"}
}

func reconcileSlice(ctx context.Context, c kubernetes.Interface, ip net.IP, port int) error {
	family := discoveryv1.AddressTypeIPv4
	if ip.To4() == nil {
		family = discoveryv1.AddressTypeIPv6
	}
	wantEndpoints := []discoveryv1.Endpoint{{
		Addresses:  []string{ip.String()},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
	}}
	wantPorts := []discoveryv1.EndpointPort{{
		Name: ptr.To(portName), Port: ptr.To(int32(port)), Protocol: ptr.To(corev1.ProtocolTCP),
	}}
	api := c.DiscoveryV1().EndpointSlices(namespace)
	cur, err := api.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = api.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: family,
			Endpoints:   wantEndpoints,
			Ports:       wantPorts,
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if cur.AddressType != family {
		// The address type cannot change: replace the slice.
		if err := api.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		return reconcileSlice(ctx, c, ip, port)
	}
	if reflect.DeepEqual(cur.Endpoints, wantEndpoints) && reflect.DeepEqual(cur.Ports, wantPorts) &&
		cur.Labels[discoveryv1.LabelServiceName] == name {
		return nil
	}
	cur.Endpoints, cur.Ports = wantEndpoints, wantPorts
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	cur.Labels[discoveryv1.LabelServiceName] = name
	_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}
