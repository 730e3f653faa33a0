package helmcontroller

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// helmConfig is a Helm action configuration with releases in memory and a
// kube client that only pretends, as Helm's own action tests use.
func helmConfig(t *testing.T) *action.Configuration {
	t.Helper()
	mem := driver.NewMemory()
	mem.SetNamespace("apps")
	return &action.Configuration{
		Releases:     storage.Init(mem),
		KubeClient:   &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: chartutil.DefaultCapabilities,
		Log:          func(string, ...interface{}) {},
	}
}

func fakeChart() *chart.Chart {
	return &chart.Chart{
		Metadata:  &chart.Metadata{APIVersion: "v2", Name: "c", Version: "1.0.0"},
		Templates: []*chart.File{{Name: "templates/cm.yaml", Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")}},
	}
}

// history stores revisions of release "r" with the given states, labelled
// as this controller labels them.
func history(t *testing.T, cfg *action.Configuration, states ...release.Status) {
	t.Helper()
	for i, s := range states {
		r := &release.Release{
			Name: "r", Namespace: "apps", Version: i + 1, Chart: fakeChart(),
			Manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
			Info:     &release.Info{Status: s},
			Labels:   map[string]string{OwnerLabel: "uid-1", OperatorLabel: "dead-instance"},
		}
		if err := cfg.Releases.Create(r); err != nil {
			t.Fatal(err)
		}
	}
}

func states(t *testing.T, cfg *action.Configuration) string {
	t.Helper()
	rels, err := cfg.Releases.History("r")
	if errors.Is(err, driver.ErrReleaseNotFound) || len(rels) == 0 {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(rels))
	for _, r := range rels {
		out[r.Version-1] = string(r.Info.Status)
	}
	return strings.Join(out, ",")
}

func upgrade(cfg *action.Configuration) error {
	up := action.NewUpgrade(cfg)
	up.Namespace = "apps"
	_, err := up.RunWithContext(context.Background(), "r", fakeChart(), nil)
	return err
}

func TestRecoverReleaseLeftPending(t *testing.T) {
	for _, tc := range []struct {
		name   string
		states []release.Status
		// after is the history after recovery; then is what installs or
		// upgrades it again.
		after, then string
	}{
		{"install cut short", []release.Status{release.StatusPendingInstall}, "", "install"},
		{"uninstall cut short", []release.Status{release.StatusUninstalling}, "", "install"},
		{"upgrade cut short", []release.Status{release.StatusSuperseded, release.StatusDeployed, release.StatusPendingUpgrade},
			"superseded,superseded,failed,deployed", "upgrade"},
		{"rollback cut short", []release.Status{release.StatusDeployed, release.StatusPendingRollback},
			"superseded,failed,deployed", "upgrade"},
		{"upgrade of a failed install cut short", []release.Status{release.StatusFailed, release.StatusPendingUpgrade},
			"failed,failed", "upgrade"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := helmConfig(t)
			history(t, cfg, tc.states...)
			last, err := cfg.Releases.Last("r")
			if err != nil {
				t.Fatal(err)
			}
			if !stuck(last) {
				t.Fatalf("%s not taken for stuck", last.Info.Status)
			}
			// The fault: Helm refuses every operation while the mark stays.
			if err := upgrade(cfg); err == nil {
				t.Fatalf("an upgrade over %s went through: the test proves nothing", last.Info.Status)
			}
			was := last.Info.Status
			did, err := recoverRelease(cfg, last, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(did, string(was)) {
				t.Errorf("recovery says %q, not naming %s", did, was)
			}
			if got := states(t, cfg); got != tc.after {
				t.Errorf("history after recovery %q, want %q", got, tc.after)
			}
			if rolled, err := cfg.Releases.Deployed("r"); err == nil && rolled.Labels[OwnerLabel] != "uid-1" {
				t.Errorf("the rolled back release lost its owner label: %v", rolled.Labels)
			}
			if tc.then == "install" {
				in := action.NewInstall(cfg)
				in.ReleaseName, in.Namespace = "r", "apps"
				if _, err := in.RunWithContext(context.Background(), fakeChart(), nil); err != nil {
					t.Fatalf("installing again: %v", err)
				}
			} else if err := upgrade(cfg); err != nil {
				t.Fatalf("upgrading after recovery: %v", err)
			}
			if last, err := cfg.Releases.Last("r"); err != nil || last.Info.Status != release.StatusDeployed {
				t.Errorf("after recovery and %s: %v %v", tc.then, last.Info.Status, err)
			}
		})
	}
	// A release not stuck is left alone.
	cfg := helmConfig(t)
	history(t, cfg, release.StatusDeployed, release.StatusFailed)
	last, _ := cfg.Releases.Last("r")
	if stuck(last) {
		t.Errorf("a failed release taken for stuck")
	}
	if did, err := recoverRelease(cfg, last, time.Minute); did != "" || err != nil || states(t, cfg) != "deployed,failed" {
		t.Errorf("recovering a failed release: %q %v, history %s", did, err, states(t, cfg))
	}
}

func lease(name, holder string, renewed time.Time) *coordinationv1.Lease {
	return namedLease(name, holder, "", renewed)
}

func namedLease(name, holder, server string, renewed time.Time) *coordinationv1.Lease {
	d := int32(leaseDuration)
	at := metav1.NewMicroTime(renewed)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: leasePrefix + name, Namespace: leaseNamespace,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": leaseManagedBy},
			Annotations: map[string]string{serverNameAnnotation: server}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &d, RenewTime: &at},
	}
}

func TestOwnerOfAPendingReleaseIsAliveOnlyWithALiveLease(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	client := fake.NewClientset(
		lease("before", "id-a", now.Add(-5*time.Second)),   // this server's last run: SIGKILLed just now
		lease("other", "id-b", now.Add(-5*time.Second)),    // another server, running
		lease("other-dead", "id-c", now.Add(-time.Minute)), // another server, gone
		lease("ancient", "id-d", now.Add(-2*time.Hour)),
		// A clone of this machine: same host name, its own data dir and ID.
		namedLease("twin", "id-twin", "server-a", now.Add(-5*time.Second)),
	)
	o := &owners{leases: client.CoordinationV1().Leases(leaseNamespace), id: "id-a", name: "server-a", instance: "now", now: func() time.Time { return now }}
	for instance, alive := range map[string]bool{
		"": false,
		// Ours: the single worker asks only between operations, so a
		// mark of ours still pending was abandoned (Helm's last write
		// failed).
		"now":        false,
		"before":     false,
		"other":      true,
		"other-dead": false,
		"missing":    false,
		"twin":       true,
	} {
		err := o.ownerGone(context.Background(), instance, release.StatusPendingInstall)
		var live errOwnerAlive
		if got := errors.As(err, &live); got != alive || (err != nil && !got) {
			t.Errorf("instance %q: ownerGone = %v, want alive %v", instance, err, alive)
		}
	}

	// Start: this instance holds a Lease; this server's earlier ones and
	// long-dead ones go, another server's stay (it may still run).
	if err := o.hold(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := o.clearDead(context.Background()); err != nil {
		t.Fatal(err)
	}
	list, err := o.leases.List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range list.Items {
		names = append(names, strings.TrimPrefix(l.Name, leasePrefix))
	}
	sort.Strings(names)
	if got := strings.Join(names, ","); got != "now,other,other-dead,twin" {
		t.Errorf("Leases after start: %s, want now,other,other-dead,twin (the twin of the same host name runs)", got)
	}
	now = now.Add(20 * time.Second)
	if err := o.renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, err := o.leases.Get(context.Background(), leasePrefix+"now", metav1.GetOptions{})
	if err != nil || !l.Spec.RenewTime.Time.Equal(now) || *l.Spec.HolderIdentity != "id-a" || l.Annotations[serverNameAnnotation] != "server-a" {
		t.Errorf("renewed Lease: %+v %v", l, err)
	}
}

func TestNewInstanceIsALabelValueAndUnique(t *testing.T) {
	now := time.Now()
	a, b := newInstance(now), newInstance(now)
	if a == b {
		t.Errorf("two instances started at once share a name: %s", a)
	}
	for _, r := range a {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			t.Fatalf("instance %q is not a DNS label", a)
		}
	}
	if len(leasePrefix+a) > 63 {
		t.Errorf("instance %q too long for a label", a)
	}
}

func TestStopTransportEndsAWatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a watch that never ends by itself
	}))
	defer srv.Close()
	stop, cancel := context.WithCancel(context.Background())
	client := &http.Client{Transport: &stopTransport{next: http.DefaultTransport, stop: stop}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		read <- err
	}()
	cancel()
	select {
	case err := <-read:
		if err == nil {
			t.Error("the watch ended without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch outlived the stop")
	}
	if _, err := client.Get(srv.URL); err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("a request after the stop: %v", err)
	}
}

func TestFailuresAreLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var f failureLog
	count := func() int { return strings.Count(buf.String(), "helm chart failed") }
	f.log(log, "ns/a", errors.New("boom"))
	f.log(log, "ns/a", errors.New("boom"))
	f.log(log, "ns/b", errors.New("boom"))
	if count() != 2 || !strings.Contains(buf.String(), "helmchart=ns/a") {
		t.Fatalf("log:\n%s", buf.String())
	}
	f.log(log, "ns/a", errors.New("other"))
	if count() != 3 {
		t.Errorf("a new failure was not logged:\n%s", buf.String())
	}
	f.clear("ns/a")
	f.log(log, "ns/a", errors.New("other"))
	if count() != 4 {
		t.Errorf("a failure after success was not logged:\n%s", buf.String())
	}
	f.last["ns/a"] = failureSeen{"other", time.Now().Add(-failureRepeat)}
	f.log(log, "ns/a", errors.New("other"))
	if count() != 5 {
		t.Errorf("a failure repeating for %s was not logged again:\n%s", failureRepeat, buf.String())
	}
}

// stuckRelease is revision version of release r in namespace apps.
func stuckRelease(version int, status release.Status, operator string) *release.Release {
	labels := map[string]string{OwnerLabel: "uid-1"}
	if operator != "" {
		labels[OperatorLabel] = operator
	}
	return &release.Release{Name: "r", Namespace: "apps", Version: version, Info: &release.Info{Status: status}, Labels: labels}
}

func TestOnlyAReleaseRecordedInFlightIsRecovered(t *testing.T) {
	rec := func(op string, revision int) *InFlight {
		return &InFlight{Instance: "i-1", Namespace: "apps", Revision: revision, Operation: op}
	}
	for _, tc := range []struct {
		name string
		rec  *InFlight
		ns   string
		last *release.Release
		ok   bool
	}{
		{"install cut short", rec(opInstall, 1), "apps", stuckRelease(1, release.StatusPendingInstall, "i-1"), true},
		{"upgrade cut short", rec(opUpgrade, 3), "apps", stuckRelease(3, release.StatusPendingUpgrade, "i-1"), true},
		// Helm gives a rollback's and an uninstall's revision the labels
		// of the revision they come from.
		{"rollback cut short", rec(opRollback, 4), "apps", stuckRelease(4, release.StatusPendingRollback, "i-0"), true},
		{"uninstall cut short", rec(opUninstall, 1), "apps", stuckRelease(1, release.StatusUninstalling, "i-0"), true},
		{"uninstall cut short before its mark", rec(opUninstall, 1), "apps", stuckRelease(1, release.StatusPendingInstall, "i-0"), true},

		// Forged by whoever writes Secrets in the namespace: no
		// operator label, "no live owner" before.
		{"no record, no operator", nil, "apps", stuckRelease(1, release.StatusPendingInstall, ""), false},
		{"no record (an older skiff's)", nil, "apps", stuckRelease(1, release.StatusPendingInstall, "i-1"), false},
		{"a revision after the recorded one", rec(opUpgrade, 3), "apps", stuckRelease(4, release.StatusPendingUpgrade, "i-1"), false},
		{"a revision before the recorded one", rec(opUpgrade, 3), "apps", stuckRelease(2, release.StatusPendingUpgrade, "i-1"), false},
		{"another namespace", rec(opInstall, 1), "tenant", stuckRelease(1, release.StatusPendingInstall, "i-1"), false},
		{"another operator", rec(opInstall, 1), "apps", stuckRelease(1, release.StatusPendingInstall, "i-2"), false},
		{"no operator", rec(opUpgrade, 2), "apps", stuckRelease(2, release.StatusPendingUpgrade, ""), false},
		{"an install recorded, an upgrade found", rec(opInstall, 2), "apps", stuckRelease(2, release.StatusPendingUpgrade, "i-1"), false},
		{"an upgrade recorded, an uninstall found", rec(opUpgrade, 2), "apps", stuckRelease(2, release.StatusUninstalling, "i-1"), false},
		{"an upgrade recorded, an install found", rec(opUpgrade, 1), "apps", stuckRelease(1, release.StatusPendingInstall, "i-1"), false},
		{"an uninstall recorded, an upgrade found", rec(opUninstall, 2), "apps", stuckRelease(2, release.StatusPendingUpgrade, "i-1"), false},
		{"a rollback recorded, an upgrade found", rec(opRollback, 2), "apps", stuckRelease(2, release.StatusPendingUpgrade, "i-1"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := recorded(tc.rec, tc.ns, tc.last)
			if (err == nil) != tc.ok {
				t.Fatalf("recorded = %v, want recovered %v", err, tc.ok)
			}
			var nr errNotRecorded
			if err != nil && (!errors.As(err, &nr) || !strings.Contains(err.Error(), "left alone") ||
				!strings.Contains(err.Error(), tc.ns+"/r revision") || !strings.Contains(err.Error(), string(tc.last.Info.Status))) {
				t.Errorf("the report does not say what is left alone: %v", err)
			}
		})
	}
}

func TestInFlightRecordGoesOnceSettled(t *testing.T) {
	rec := &InFlight{Instance: "i-1", Namespace: "apps", Revision: 2, Operation: opUpgrade}
	for _, tc := range []struct {
		name string
		ns   string
		last *release.Release
		keep bool
	}{
		{"still pending", "apps", stuckRelease(2, release.StatusPendingUpgrade, "i-1"), true},
		{"deployed", "apps", stuckRelease(2, release.StatusDeployed, "i-1"), false},
		{"failed", "apps", stuckRelease(2, release.StatusFailed, "i-1"), false},
		{"never written (cut short before Helm's first write)", "apps", nil, false},
		{"another revision pending", "apps", stuckRelease(3, release.StatusPendingUpgrade, "i-1"), false},
		{"the release moved namespace", "other", stuckRelease(2, release.StatusPendingUpgrade, "i-1"), false},
	} {
		if got := settled(rec, tc.ns, tc.last); (got != nil) != tc.keep {
			t.Errorf("%s: record kept %v, want %v", tc.name, got != nil, tc.keep)
		}
	}
	if settled(nil, "apps", nil) != nil {
		t.Error("no record made one")
	}
}

func TestRecoveryOperationMatchesWhatRecoveryMarks(t *testing.T) {
	for status, want := range map[release.Status]string{
		release.StatusPendingInstall:  opUninstall,
		release.StatusUninstalling:    opUninstall,
		release.StatusPendingUpgrade:  opRollback,
		release.StatusPendingRollback: opRollback,
	} {
		cfg := helmConfig(t)
		states := []release.Status{status}
		if want == opRollback {
			states = []release.Status{release.StatusDeployed, status}
		}
		history(t, cfg, states...)
		last, _ := cfg.Releases.Last("r")
		op, revision := recoveryOperation(last)
		if op != want {
			t.Errorf("%s: operation %s, want %s", status, op, want)
			continue
		}
		rec := &InFlight{Instance: "now", Namespace: "apps", Revision: revision, Operation: op}
		// Recovery cut short where it marks its revision: the record
		// must let the next start recover that.
		var marked *release.Release
		if op == opUninstall {
			marked = stuckRelease(last.Version, release.StatusUninstalling, "dead-instance")
		} else {
			marked = stuckRelease(last.Version+1, release.StatusPendingRollback, "dead-instance")
		}
		if err := recorded(rec, "apps", marked); err != nil {
			t.Errorf("%s: recovery cut short is not recoverable: %v", status, err)
		}
		if _, err := recoverRelease(cfg, last, time.Minute); err != nil {
			t.Fatal(err)
		}
		after, err := cfg.Releases.Last("r")
		if op == opRollback && (err != nil || after.Version != revision) {
			t.Errorf("%s: rollback wrote revision %v (%v), recorded %d", status, after, err, revision)
		}
	}
}

func TestInFlightRecordIsClearedByTheStatusPatch(t *testing.T) {
	// The status is written as a merge patch: a record not written as
	// null would stay.
	if got := mustJSON(HelmChartStatus{Phase: "Installed"}); !strings.Contains(got, `"inFlight":null`) {
		t.Errorf("status without a record marshals as %s", got)
	}
	a := HelmChartStatus{Phase: "Installing", InFlight: &InFlight{Instance: "i", Revision: 1}}
	b := a
	b.InFlight = &InFlight{Instance: "i", Revision: 1}
	if !sameStatus(a, b) {
		t.Error("equal records compared unequal")
	}
	b.InFlight.Revision = 2
	if sameStatus(a, b) {
		t.Error("different records compared equal")
	}
	b.InFlight = nil
	if sameStatus(a, b) || !sameStatus(b, b) {
		t.Error("a record compared equal to none")
	}
}

func TestServerIDIsKeptPerDataDir(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "id")
	a, err := ServerID(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(a); err != nil {
		t.Errorf("ID %q: %v", a, err)
	}
	if again, err := ServerID(path); err != nil || again != a {
		t.Errorf("second start: %q %v, want %q", again, err, a)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ID file: %v %v", fi, err)
	}
	// A clone's own data dir (same host name) gets its own.
	if b, err := ServerID(filepath.Join(t.TempDir(), "id")); err != nil || b == a {
		t.Errorf("another data dir: %q %v, same as %q", b, err, a)
	}
	if err := os.WriteFile(path, []byte("not-a-uuid\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ServerID(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a damaged ID file: %v, want an error naming %s", err, path)
	}
}
