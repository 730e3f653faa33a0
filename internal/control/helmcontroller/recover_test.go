package helmcontroller

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

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
	d := int32(leaseDuration)
	at := metav1.NewMicroTime(renewed)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: leasePrefix + name, Namespace: leaseNamespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": leaseManagedBy}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &d, RenewTime: &at},
	}
}

func TestOwnerOfAPendingReleaseIsAliveOnlyWithALiveLease(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	client := fake.NewClientset(
		lease("before", "server-a", now.Add(-5*time.Second)),   // this server's last run: SIGKILLed just now
		lease("other", "server-b", now.Add(-5*time.Second)),    // another server, running
		lease("other-dead", "server-c", now.Add(-time.Minute)), // another server, gone
		lease("ancient", "server-d", now.Add(-2*time.Hour)),
	)
	o := &owners{leases: client.CoordinationV1().Leases(leaseNamespace), server: "server-a", instance: "now", now: func() time.Time { return now }}
	for instance, alive := range map[string]bool{
		"":           false, // marked by no instance: an older skiff's
		"now":        true,  // ours: the operation running
		"before":     false,
		"other":      true,
		"other-dead": false,
		"missing":    false,
	} {
		r := &release.Release{Name: "r", Info: &release.Info{Status: release.StatusPendingInstall}, Labels: map[string]string{OperatorLabel: instance}}
		err := o.ownerGone(context.Background(), r)
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
	if got := strings.Join(names, ","); got != "now,other,other-dead" {
		t.Errorf("Leases after start: %s, want now,other,other-dead", got)
	}
	now = now.Add(20 * time.Second)
	if err := o.renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, err := o.leases.Get(context.Background(), leasePrefix+"now", metav1.GetOptions{})
	if err != nil || !l.Spec.RenewTime.Time.Equal(now) || *l.Spec.HolderIdentity != "server-a" {
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
