package loadbalancer

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// refreshInterval is how often the server list follows the kubernetes
// Service (a node may only get that object, not watch it). A dead server
// leaves the Service's endpoints within 15-25 s (the apiservers' lease TTL
// and reconcile interval), then this list within refreshInterval.
const refreshInterval = 5 * time.Second

// Follow keeps lb's servers in step with the endpoints of the default/kubernetes
// Service (every server's supervisor address), keeping seed last as a fallback.
// It runs until ctx ends; kubeconfig reaches the API through lb itself.
func Follow(ctx context.Context, lb *LB, kubeconfig, seed string) error {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load balancer: loading %s: %w", kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	tick := time.NewTicker(refreshInterval)
	defer tick.Stop()
	for {
		if servers, err := Servers(ctx, client, seed); err == nil {
			lb.SetServers(servers)
		} else {
			lb.log.Debug("reading the kubernetes Service's endpoints", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Servers lists the supervisor addresses of the kubernetes Service's endpoints,
// then seed if it is not among them. Endpoints that list no address (every
// server restarting, say) are an error: the current list is kept.
func Servers(ctx context.Context, c kubernetes.Interface, seed string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ep, err := c.CoreV1().Endpoints(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, sub := range ep.Subsets {
		for _, port := range sub.Ports {
			for _, addr := range sub.Addresses {
				out = append(out, net.JoinHostPort(addr.IP, strconv.Itoa(int(port.Port))))
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the kubernetes Service lists no server")
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if !slices.Contains(out, seed) {
		out = append(out, seed)
	}
	return out, nil
}
