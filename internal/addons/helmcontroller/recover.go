package helmcontroller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
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
// cut the operation short) leaves the mark behind for ever. So before every
// release operation the controller records it in the HelmChart's status
// (InFlight: instance, namespace, revision, operation), install and upgrade
// revisions are labelled with the instance too, and each instance holds a
// Lease while it lives. A pending release that matches the record and whose
// instance holds no live Lease has no live owner: the controller that finds
// it finishes it as Helm would and then reconciles. A pending release that
// does not match the record is not the controller's to touch: its Secrets
// lie in the target namespace, where others may write, and recovering it
// would run its manifest's deletions with the controller's rights.

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
// runs. id is this server's identity (made once per data dir, see
// ServerID): one data dir runs one process at a time, so an instance that
// held a Lease as this identity and is not this one has died. name is the
// server's name, for people reading the Lease.
type owners struct {
	leases   typedcoordinationv1.LeaseInterface
	id, name string
	instance string
	now      func() time.Time
}

// serverNameAnnotation on a Lease names the server holding it, for people:
// the holder identity is the server's ID, which two servers with the same
// host name do not share.
const serverNameAnnotation = "helm.skiff.io/server-name"

// hold creates this instance's Lease. It must exist before the instance
// marks any release, or another server would take the mark for abandoned.
func (o *owners) hold(ctx context.Context) error {
	now := metav1.NewMicroTime(o.now())
	d := int32(leaseDuration)
	holder := o.id
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: leasePrefix + o.instance, Namespace: leaseNamespace,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": leaseManagedBy},
			Annotations: map[string]string{serverNameAnnotation: o.name}},
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
		mine := l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == o.id
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

// ownerGone returns nil when instance, which left a release in status,
// runs no more, an errOwnerAlive when it may still run. This instance
// counts as gone: its single worker runs one sync at a time and asks only
// before starting an operation, so an operation of its own still marked
// pending was cut short (Helm's final write failed, or its process was an
// earlier one of the same name, which cannot be).
func (o *owners) ownerGone(ctx context.Context, instance string, status release.Status) error {
	if instance == "" || instance == o.instance {
		return nil
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
	if holder == o.id || expiredFor(l, o.now(), 0) {
		return nil
	}
	return errOwnerAlive{string(status), "server " + l.Annotations[serverNameAnnotation] + " id " + holder}
}

// errNotRecorded says a stuck release is not one the controller recorded
// as in flight: it is reported and left alone, never recovered.
type errNotRecorded struct {
	ns, name string
	r        *release.Release
	why      string
}

func (e errNotRecorded) Error() string {
	return fmt.Sprintf("release %s/%s revision %d is %s but %s: left alone, as it may not be this controller's "+
		"(its Secrets can be written by others in namespace %s); if no operation runs on it, "+
		"finish it with the helm CLI (helm rollback or helm uninstall) or delete its revision Secret",
		e.ns, e.name, e.r.Version, e.r.Info.Status, e.why, e.ns)
}

// operationMarks is the status each operation marks its revision with.
var operationMarks = map[string]release.Status{
	opInstall:   release.StatusPendingInstall,
	opUpgrade:   release.StatusPendingUpgrade,
	opRollback:  release.StatusPendingRollback,
	opUninstall: release.StatusUninstalling,
}

const (
	opInstall   = "install"
	opUpgrade   = "upgrade"
	opRollback  = "rollback"
	opUninstall = "uninstall"
)

// recorded checks that stuck release last, found in namespace ns, is the
// one rec says the controller left in flight: same namespace and revision,
// the status that operation marks (an uninstall, which recovers a pending
// install, may be cut short before its mark), and, for an install or
// upgrade, which label their revision, the same instance. A rollback's or uninstall's
// revision keeps the labels of the one it comes from, so rec's instance is
// what is asked about. It returns errNotRecorded otherwise.
func recorded(rec *InFlight, ns string, last *release.Release) error {
	bad := func(why string) error { return errNotRecorded{ns, last.Name, last, why} }
	switch {
	case rec == nil:
		return bad("the HelmChart's status records no operation in flight (a skiff older than the record may have left it)")
	case rec.Namespace != ns || rec.Revision != last.Version:
		return bad(fmt.Sprintf("the operation in flight recorded in the HelmChart's status is revision %d in namespace %s", rec.Revision, rec.Namespace))
	case operationMarks[rec.Operation] != last.Info.Status &&
		!(rec.Operation == opUninstall && last.Info.Status == release.StatusPendingInstall):
		return bad(fmt.Sprintf("the operation in flight recorded is an %s", rec.Operation))
	case (rec.Operation == opInstall || rec.Operation == opUpgrade) && last.Labels[OperatorLabel] != rec.Instance:
		return bad(fmt.Sprintf("it is labelled %s=%q, not the recorded instance %q", OperatorLabel, last.Labels[OperatorLabel], rec.Instance))
	}
	return nil
}

// settled returns rec, or nil once its operation is over: the release in
// rec's namespace is no longer stuck at rec's revision (last is that
// namespace's last revision, nil if none). A record kept after it settles
// would let a revision forged later at that number pass for it.
func settled(rec *InFlight, ns string, last *release.Release) *InFlight {
	if rec == nil || (rec.Namespace == ns && stuck(last) && last.Version == rec.Revision) {
		return rec
	}
	return nil
}

// stuck reports whether a release's last revision is in a state that no
// Helm operation moves on from: an operation's mark, or an uninstall cut
// short.
func stuck(r *release.Release) bool {
	return r != nil && (r.Info.Status.IsPending() || r.Info.Status == release.StatusUninstalling)
}

// recoveryOperation is what recoverRelease does to stuck release last, and
// the revision that marks pending: an uninstall of it, or a rollback,
// whose revision follows it.
func recoveryOperation(last *release.Release) (op string, revision int) {
	if last.Info.Status == release.StatusPendingInstall || last.Info.Status == release.StatusUninstalling {
		return opUninstall, last.Version
	}
	return opRollback, last.Version + 1
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

// ServerID returns this server's identity, a random UUID kept in file path
// (<data-dir>/server/id), made on the first call. It tells servers apart
// where their names may not: two servers without agents on cloned machines
// share a host name, and by name each would take the other's live Helm
// operations for its own dead ones. The file is 0600, one line.
func ServerID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if _, perr := uuid.Parse(id); perr != nil {
			return "", fmt.Errorf("server ID file %s: %q is not a UUID: %w (delete the file to make a new one)", path, id, perr)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading the server ID: %w", err)
	}
	id := uuid.NewString()
	// Written aside and renamed, so that a crash leaves no half ID.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the server ID: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("writing the server ID: %w", err)
	}
	return id, nil
}
