package helmcontroller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcoordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
)

// A Helm operation marks its release pending-install, pending-upgrade or
// pending-rollback in storage before it touches the cluster and marks it
// deployed or failed when done; Helm then refuses any other operation on the
// release. A process that dies in between (SIGKILL, power loss, a stop that
// cut the operation short) leaves the mark behind for ever. So every release
// operation of the controller is labelled with the instance of the process
// that runs it, and each instance holds a Lease while it lives. A pending
// release whose instance holds no live Lease has no live owner: the
// controller that finds it finishes it as Helm would and then reconciles.

// OperatorLabel on a release names the controller instance (see Lease)
// whose operation wrote it last.
const OperatorLabel = "helm.skiff.io/operator"

const (
	// leasePrefix names the Lease of an instance: kube-system/<prefix><instance>.
	leasePrefix    = "skiff-helm-"
	leaseNamespace = "kube-system"
	// leaseDuration is how long an instance counts as alive after its last
	// renewal, seconds; it renews every leaseRenew.
	leaseDuration = 30
	leaseRenew    = 10 * time.Second
	// leaseManagedBy marks the controller's Leases, for clearing old ones.
	leaseManagedBy = "skiff-helm-controller"
)

// newInstance names this run of the controller: unique per process start,
// short enough for a label value and a Lease name.
func newInstance(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatInt(now.UnixNano(), 36) + "-" + hex.EncodeToString(b[:])
}

// owners tells whether the instance that marked a release pending still
// runs. server names this process's server: one server runs one process at
// a time, so an instance that held a Lease as this server and is not this
// one has died.
type owners struct {
	leases   typedcoordinationv1.LeaseInterface
	server   string
	instance string
	now      func() time.Time
}

// hold creates this instance's Lease. It must exist before the instance
// marks any release, or another server would take the mark for abandoned.
func (o *owners) hold(ctx context.Context) error {
	now := metav1.NewMicroTime(o.now())
	d := int32(leaseDuration)
	holder := o.server
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: leasePrefix + o.instance, Namespace: leaseNamespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": leaseManagedBy}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &d, AcquireTime: &now, RenewTime: &now},
	}
	if _, err := o.leases.Create(ctx, l, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Lease %s/%s: %w", leaseNamespace, l.Name, err)
	}
	return nil
}

// renew moves this instance's Lease on; it makes it again if it went.
func (o *owners) renew(ctx context.Context) error {
	l, err := o.leases.Get(ctx, leasePrefix+o.instance, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return o.hold(ctx)
	}
	if err != nil {
		return fmt.Errorf("renewing Lease: %w", err)
	}
	now := metav1.NewMicroTime(o.now())
	l.Spec.RenewTime = &now
	if _, err := o.leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("renewing Lease %s: %w", l.Name, err)
	}
	return nil
}

// clearDead deletes the Leases of this server's earlier instances and those
// expired for an hour: their releases, if any are left pending, count as
// abandoned either way.
func (o *owners) clearDead(ctx context.Context) error {
	list, err := o.leases.List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=" + leaseManagedBy})
	if err != nil {
		return fmt.Errorf("listing Leases: %w", err)
	}
	for i := range list.Items {
		l := &list.Items[i]
		if l.Name == leasePrefix+o.instance {
			continue
		}
		mine := l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == o.server
		if mine || expiredFor(l, o.now(), time.Hour) {
			if err := o.leases.Delete(ctx, l.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting Lease %s: %w", l.Name, err)
			}
		}
	}
	return nil
}

// expiredFor reports whether a Lease was last renewed more than its
// duration plus grace ago.
func expiredFor(l *coordinationv1.Lease, now time.Time, grace time.Duration) bool {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return true
	}
	end := l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second + grace)
	return now.After(end)
}

// errOwnerAlive says a pending release belongs to an operation that may
// still be running: wait, do not touch it.
type errOwnerAlive struct{ status, owner string }

func (e errOwnerAlive) Error() string {
	return fmt.Sprintf("release is %s by a running controller (%s): waiting for it", e.status, e.owner)
}

// ownerGone returns nil when the operation that left r stuck has no live
// owner, an errOwnerAlive when it may still run. A release marked by no
// instance (an older skiff) has none; one marked by this instance has (the
// controller's single worker runs one operation at a time, so a mark of
// ours is of the operation running now).
func (o *owners) ownerGone(ctx context.Context, r *release.Release) error {
	instance := r.Labels[OperatorLabel]
	switch {
	case instance == "":
		return nil
	case instance == o.instance:
		return errOwnerAlive{string(r.Info.Status), "this server"}
	}
	l, err := o.leases.Get(ctx, leasePrefix+instance, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the Lease of instance %s: %w", instance, err)
	}
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if holder == o.server || expiredFor(l, o.now(), 0) {
		return nil
	}
	return errOwnerAlive{string(r.Info.Status), "server " + holder}
}

// stuck reports whether a release's last revision is in a state that no
// Helm operation moves on from: an operation's mark, or an uninstall cut
// short.
func stuck(r *release.Release) bool {
	return r != nil && (r.Info.Status.IsPending() || r.Info.Status == release.StatusUninstalling)
}

// recoverRelease finishes, as Helm would, the abandoned operation that left
// release name stuck, and says what it did. An install (or uninstall) cut
// short is uninstalled, history and all, so that it can be installed again;
// an upgrade or rollback cut short is marked failed and the release rolled
// back to its last deployed revision, if it has one (else the next upgrade
// starts from the failed one, as `helm upgrade` does).
func recoverRelease(cfg *action.Configuration, last *release.Release, timeout time.Duration) (string, error) {
	was := last.Info.Status
	switch was {
	case release.StatusPendingInstall, release.StatusUninstalling:
		un := action.NewUninstall(cfg)
		un.IgnoreNotFound = true
		un.Timeout = timeout
		if _, err := un.Run(last.Name); err != nil {
			return "", fmt.Errorf("uninstalling release %s left %s: %w", last.Name, was, err)
		}
		return fmt.Sprintf("uninstalled release %s left %s by a stopped server", last.Name, was), nil
	case release.StatusPendingUpgrade, release.StatusPendingRollback:
		last.SetStatus(release.StatusFailed, fmt.Sprintf("%s cut short: the server running it stopped", strings.TrimPrefix(string(was), "pending-")))
		if err := cfg.Releases.Update(last); err != nil {
			return "", fmt.Errorf("marking release %s failed: %w", last.Name, err)
		}
		deployed, err := cfg.Releases.Deployed(last.Name)
		if errors.Is(err, driver.ErrNoDeployedReleases) {
			return fmt.Sprintf("marked release %s revision %d failed: it was left %s by a stopped server", last.Name, last.Version, was), nil
		}
		if err != nil {
			return "", fmt.Errorf("reading release %s: %w", last.Name, err)
		}
		rb := action.NewRollback(cfg)
		rb.Version = deployed.Version
		rb.Timeout = timeout
		rb.MaxHistory = maxHistory
		if err := rb.Run(last.Name); err != nil {
			return "", fmt.Errorf("rolling release %s back to revision %d: %w", last.Name, deployed.Version, err)
		}
		return fmt.Sprintf("rolled release %s back to revision %d: revision %d was left %s by a stopped server", last.Name, deployed.Version, last.Version, was), nil
	}
	return "", nil
}
