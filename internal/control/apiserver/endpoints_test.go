package apiserver

import (
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/controlplane/reconcilers"
)

// recorded is an upstream reconciler that records the ports it is given.
type recorded struct {
	reconcilers.EndpointReconciler
	reconciled, removed []corev1.EndpointPort
}

func (r *recorded) ReconcileEndpoints(_ string, _ net.IP, ports []corev1.EndpointPort, _ bool) error {
	r.reconciled = ports
	return nil
}

func (r *recorded) RemoveEndpoints(_ string, _ net.IP, ports []corev1.EndpointPort) error {
	r.removed = ports
	return nil
}

// The kubernetes Service's endpoints name the supervisor's port, not the
// apiserver's loopback one, and the caller's ports are left as they were.
func TestPublishedPortReplacesTheListeningPort(t *testing.T) {
	up := &recorded{}
	p := publishedPort{EndpointReconciler: up, port: 6443}
	in := []corev1.EndpointPort{{Name: "https", Port: 6444, Protocol: corev1.ProtocolTCP}}
	if err := p.ReconcileEndpoints("kubernetes", net.ParseIP("192.0.2.1"), in, true); err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveEndpoints("kubernetes", net.ParseIP("192.0.2.1"), in); err != nil {
		t.Fatal(err)
	}
	for _, got := range [][]corev1.EndpointPort{up.reconciled, up.removed} {
		if len(got) != 1 || got[0].Port != 6443 || got[0].Name != "https" || got[0].Protocol != corev1.ProtocolTCP {
			t.Errorf("upstream got ports %+v", got)
		}
	}
	if in[0].Port != 6444 {
		t.Errorf("caller's ports changed: %+v", in)
	}
}
