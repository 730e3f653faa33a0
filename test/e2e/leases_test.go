package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// controlPlaneLeases are the Leases of the control-plane components that
// elect a leader when several servers share a datastore.
var controlPlaneLeases = []string{"kube-controller-manager", "kube-scheduler"}

// leaseHolders returns each elected Lease as it is now, by name; a Lease
// not yet created is absent.
func leaseHolders(t *testing.T, c kubernetes.Interface) map[string]*coordinationv1.Lease {
	t.Helper()
	out := map[string]*coordinationv1.Lease{}
	for _, name := range controlPlaneLeases {
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

// TestLostLeaseStopsServer runs a server on embedded etcd (leader election
// on) and hands each elected Lease in turn to another holder: the component
// that lost it stops, and so does the server, cleanly, naming it, with a
// non-zero exit (not an os.Exit from upstream).
func TestLostLeaseStopsServer(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	s := newServer(t, "--cluster-init")
	for _, tc := range []struct{ lease, component string }{
		{"kube-scheduler", "scheduler"},
		{"kube-controller-manager", "controller-manager"},
	} {
		s.Start()
		c := s.Client()
		ctx := context.Background()
		eventually(t, time.Minute, func() (string, error) {
			if h := holder(leaseHolders(t, c)[tc.lease]); h == "" {
				return "no holder", errNotYet
			}
			return "", nil
		})
		// Held by someone else for 2 minutes from now: the holder cannot renew.
		patch := fmt.Sprintf(`{"spec":{"holderIdentity":"someone-else","leaseDurationSeconds":120,"renewTime":%q}}`,
			metav1.NowMicro().Format(metav1.RFC3339Micro))
		if _, err := c.CoordinationV1().Leases("kube-system").Patch(ctx, tc.lease, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.exited:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: the server still runs 2 minutes after its Lease was taken:\n%s", tc.lease, s.Output())
		}
		want := tc.component + ": lost its leader-election lease kube-system/" + tc.lease
		out := s.Output()
		if s.exitErr == nil || !strings.Contains(out, want) || !strings.Contains(out, "stopped in") || strings.Contains(out, "stop was not clean") {
			t.Fatalf("%s taken: want a clean stop saying %q and a non-zero exit, got exit %v:\n%s", tc.lease, want, s.exitErr, out)
		}
	}
}
