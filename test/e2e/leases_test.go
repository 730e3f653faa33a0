package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// electedLeases are the Leases of the control-plane components that elect a
// leader when several servers share a datastore.
var electedLeases = []string{"kube-controller-manager", "kube-scheduler"}

// leaseHolders returns each elected Lease as it is now, by name; a Lease
// not yet created is absent.
func leaseHolders(t *testing.T, c kubernetes.Interface) map[string]*coordinationv1.Lease {
	t.Helper()
	out := map[string]*coordinationv1.Lease{}
	for _, name := range electedLeases {
		l, err := c.CoordinationV1().Leases("kube-system").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("lease kube-system/%s: %v", name, err)
		}
		out[name] = l
	}
	return out
}

func holder(l *coordinationv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// stopLeaderReleasesLeases stops leader, a server that was alone when it
// started (so its controller-manager and scheduler took the Leases then),
// with SIGTERM, and checks through other that the stop was clean and that
// the Leases it held were released at once (not left to expire, 15 s), then
// taken over by another server. A Lease whose acquire time is not before
// aloneUntil changed hands since and is left out (logged).
func stopLeaderReleasesLeases(t *testing.T, leader *nsServer, other kubernetes.Interface, aloneUntil time.Time) {
	t.Helper()
	before := leaseHolders(t, other)
	held := map[string]string{}
	for name, l := range before {
		if h := holder(l); h != "" && l.Spec.AcquireTime != nil && l.Spec.AcquireTime.Time.Before(aloneUntil) {
			held[name] = h
		} else {
			t.Logf("lease %s changed hands after the first server started alone (holder %q, acquired %v): not checked", name, h, l.Spec.AcquireTime)
		}
	}
	leader.Stop()
	if strings.Contains(leader.Output(), "stop was not clean") {
		t.Errorf("server %s: stop was not clean:\n%s", leader.Node.Name, leader.Output())
	}
	after := leaseHolders(t, other)
	for name, h := range held {
		if got := holder(after[name]); got == h {
			t.Errorf("lease %s still held by the stopped server (%s): not released at stop", name, h)
		}
	}
	for name, h := range held {
		eventually(t, time.Minute, func() (string, error) {
			l := leaseHolders(t, other)[name]
			if got := holder(l); got == "" || got == h {
				return "holder " + got, errNotYet
			}
			return "", nil
		})
	}
}
