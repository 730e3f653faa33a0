package apiserver

import (
	"net"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/controlplane/reconcilers"
)

// publishedPort wraps the apiserver's endpoint reconciler (upstream's lease
// reconciler: each apiserver renews a lease with a TTL in the datastore,
// and the `kubernetes` Service's endpoints list the addresses of the live
// leases) so that it publishes the supervisor's port instead of the port
// the apiserver listens on, which in skiff is loopback only. Every server
// runs its supervisor on the same --https-listen-port, as the reconciler
// requires of apiservers' ports.
type publishedPort struct {
	reconcilers.EndpointReconciler
	port int32
}

func (p publishedPort) ports(in []corev1.EndpointPort) []corev1.EndpointPort {
	out := make([]corev1.EndpointPort, len(in))
	for i, ep := range in {
		ep.Port = p.port
		out[i] = ep
	}
	return out
}

func (p publishedPort) ReconcileEndpoints(service string, ip net.IP, ports []corev1.EndpointPort, reconcilePorts bool) error {
	return p.EndpointReconciler.ReconcileEndpoints(service, ip, p.ports(ports), reconcilePorts)
}

func (p publishedPort) RemoveEndpoints(service string, ip net.IP, ports []corev1.EndpointPort) error {
	return p.EndpointReconciler.RemoveEndpoints(service, ip, p.ports(ports))
}
