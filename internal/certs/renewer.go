package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/metrics"
	"github.com/skiffkube/skiff/internal/node"
	"github.com/skiffkube/skiff/internal/pki"
)

// ExpiringReason is the reason of the Warning Event on the Node for a
// certificate with fewer than WarnWithin left.
const ExpiringReason = "CertificateExpiringSoon"

// RenewerConfig is what the online renewal needs.
type RenewerConfig struct {
	DataDir string
	// NodeName is the Node that Warning Events are about; "" posts none.
	NodeName string
	// Kubeconfig reaches the API to post Events (the admin one on a
	// server, the kubelet's on an agent).
	Kubeconfig string
	// Client, when set, is used instead of Kubeconfig (tests).
	Client kubernetes.Interface
	// Remote renews the leaves whose CA key is not here (an agent's): it
	// asks the server for new ones. nil leaves them to the next start.
	Remote func(ctx context.Context) error
	// OnRenewed is called after every pass with the files it re-issued
	// (maybe none: `skiff certificate rotate` may have replaced some), for
	// copies of a certificate elsewhere, such as the embedded admin
	// kubeconfig; it should write only what changed.
	OnRenewed func(files []string)
	// Period is the longest wait between two checks; an hour when zero.
	Period time.Duration
	// Retry is the wait after a failed renewal; a minute when zero.
	Retry time.Duration
}

// Renewer renews leaf certificates before they expire while the server or
// agent runs: a check at the earliest renewal time of all leaves
// (pki.RenewBefore before expiry), whenever a file in the TLS directories
// changes, and at least every Period. It also sets the certificate metrics
// and posts a Warning Event on the Node for a certificate about to expire.
type Renewer struct {
	cfg RenewerConfig
	log *slog.Logger

	mu     sync.Mutex
	warned map[string]time.Time // file -> notAfter already reported
	client kubernetes.Interface

	component.Runner
}

// NewRenewer returns the renewal component.
func NewRenewer(cfg RenewerConfig, log *slog.Logger) *Renewer {
	if cfg.Period == 0 {
		cfg.Period = time.Hour
	}
	if cfg.Retry == 0 {
		cfg.Retry = time.Minute
	}
	return &Renewer{cfg: cfg, log: log.With("component", "certificates"), warned: map[string]time.Time{}, client: cfg.Client}
}

func (r *Renewer) Name() string { return "certificate-renewal" }

func (r *Renewer) Init(context.Context) error {
	metrics.Register()
	return nil
}

func (r *Renewer) Start(context.Context) error {
	w := r.watch()
	r.Go(func(ctx context.Context) error {
		if w != nil {
			defer w.Close()
		}
		return r.loop(ctx, w)
	})
	return nil
}

// newWatcher is fsnotify.NewWatcher; tests make it fail.
var newWatcher = fsnotify.NewWatcher

// watch watches the TLS directories, so that a certificate written by
// `skiff certificate rotate` or by hand is acted on at once. It is an
// optimization: when the host is out of inotify instances (EMFILE) or
// watches (ENOSPC) it logs one warning and returns nil, and renewal runs on
// its timer (Period) alone.
func (r *Renewer) watch() *fsnotify.Watcher {
	w, err := newWatcher()
	if err != nil {
		r.log.Warn("cannot watch the TLS directories: checking certificates on the timer only", "period", r.cfg.Period, "err", err)
		return nil
	}
	l := controlplane.Layout{DataDir: r.cfg.DataDir}
	for _, dir := range []string{l.TLSDir(), l.EtcdTLSDir(), node.Layout{DataDir: r.cfg.DataDir}.TLSDir()} {
		if err := w.Add(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = w.Close()
			r.log.Warn("cannot watch the TLS directories: checking certificates on the timer only", "dir", dir, "period", r.cfg.Period, "err", err)
			return nil
		}
	}
	return w
}

func (r *Renewer) Ready() error { return nil }
func (r *Renewer) Stop() error  { return r.Runner.Stop(5 * time.Second) }

// loop runs passes; w may be nil (no watch: the timer alone).
func (r *Renewer) loop(ctx context.Context, w *fsnotify.Watcher) error {
	var settle <-chan time.Time
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if w != nil {
		events, watchErrs = w.Events, w.Errors
	}
	for {
		next := r.Pass(ctx, time.Now())
		wait := min(time.Until(next), r.cfg.Period)
		timer := time.NewTimer(max(wait, 0))
	waiting:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil
			case <-timer.C:
				break waiting
			case <-settle:
				settle = nil
				timer.Stop()
				break waiting
			case ev, ok := <-events:
				if !ok {
					return errors.New("certificates: file watch closed")
				}
				// A write is a create or rename of a temporary file and
				// the rename onto the certificate: check once it settles.
				if filepath.Ext(ev.Name) == ".crt" && settle == nil {
					settle = time.After(time.Second)
				}
			case err, ok := <-watchErrs:
				if ok {
					r.log.Debug("file watch", "err", err)
				}
			}
		}
	}
}

// Pass checks every certificate at now: renews the leaves that are due,
// updates the metrics, reports those about to expire, and returns when the
// next check is due (the earliest renewal time; now plus Retry after a
// failure).
func (r *Renewer) Pass(ctx context.Context, now time.Time) time.Time {
	entries, err := Inventory(r.cfg.DataDir)
	if err != nil {
		r.log.Warn("listing certificates", "err", err)
		return now.Add(r.cfg.Retry)
	}
	cas := caCache{}
	var renewed []string
	failed := false
	remote := map[string]time.Time{} // leaves the server issues: file -> notAfter
	remoteDue := false
	for _, e := range Leaves(entries) {
		cert, err := pki.ReadCert(e.Cert)
		if err != nil {
			continue
		}
		if e.CAKey == "" {
			remote[e.Cert] = cert.NotAfter
			remoteDue = remoteDue || Due(cert.NotAfter, now)
			continue
		}
		if !Due(cert.NotAfter, now) {
			continue
		}
		fresh, err := reissue(cas, e, now)
		if err != nil {
			r.log.Error("renewing certificate", "file", e.Cert, "err", err)
			failed = true
			continue
		}
		r.logRenewed(e.Cert, cert.NotAfter, fresh.NotAfter, now)
		renewed = append(renewed, e.Cert)
	}
	if remoteDue && r.cfg.Remote != nil {
		// The server re-issues all of the node's leaves at once.
		if err := r.cfg.Remote(ctx); err != nil {
			r.log.Error("renewing the node's certificates from the server", "err", err)
			failed = true
		}
		for file, old := range remote {
			if cert, err := pki.ReadCert(file); err == nil && !cert.NotAfter.Equal(old) {
				r.logRenewed(file, old, cert.NotAfter, now)
				renewed = append(renewed, file)
			}
		}
	}
	if r.cfg.OnRenewed != nil {
		r.cfg.OnRenewed(renewed)
	}
	next := now.Add(r.cfg.Period)
	for _, e := range entries {
		cert, err := pki.ReadCert(e.Cert)
		if err != nil {
			continue
		}
		metrics.CertificateExpirationTimestamp.WithLabelValues(e.Cert).Set(float64(cert.NotAfter.Unix()))
		if StatusAt(cert.NotAfter, now) != StatusOK {
			r.warn(ctx, e.Cert, cert.NotAfter, now)
		}
		if !e.IsCA && (e.CAKey != "" || r.cfg.Remote != nil) && RenewAt(cert.NotAfter).Before(next) {
			next = RenewAt(cert.NotAfter)
		}
	}
	if failed || next.Before(now) {
		next = now.Add(r.cfg.Retry)
	}
	return next
}

func (r *Renewer) logRenewed(file string, oldNotAfter, newNotAfter, now time.Time) {
	metrics.CertificateRenewals.WithLabelValues(file).Inc()
	r.log.Info("certificate renewed", "file", file,
		"expired", !oldNotAfter.After(now), "was-valid-until", oldNotAfter.UTC().Format(time.RFC3339),
		"valid-until", newNotAfter.UTC().Format(time.RFC3339))
}

// warn logs and posts a Warning Event on the Node, once per file and
// expiry date.
func (r *Renewer) warn(ctx context.Context, file string, notAfter, now time.Time) {
	r.mu.Lock()
	if r.warned[file].Equal(notAfter) {
		r.mu.Unlock()
		return
	}
	r.warned[file] = notAfter
	r.mu.Unlock()
	days := DaysLeft(notAfter, now)
	msg := fmt.Sprintf("certificate %s expires in %d days (%s)", file, days, notAfter.UTC().Format(time.RFC3339))
	if days < 0 {
		msg = fmt.Sprintf("certificate %s expired %d days ago (%s)", file, -days, notAfter.UTC().Format(time.RFC3339))
	}
	r.log.Warn(msg)
	if r.cfg.NodeName == "" || (r.cfg.Kubeconfig == "" && r.cfg.Client == nil) {
		return
	}
	if err := r.postEvent(ctx, msg, now); err != nil {
		r.log.Debug("posting the certificate Event", "err", err)
		r.mu.Lock()
		delete(r.warned, file) // tried again at the next check
		r.mu.Unlock()
	}
}

func (r *Renewer) postEvent(ctx context.Context, msg string, now time.Time) error {
	r.mu.Lock()
	c := r.client
	r.mu.Unlock()
	if c == nil {
		cfg, err := clientcmd.BuildConfigFromFlags("", r.cfg.Kubeconfig)
		if err != nil {
			return err
		}
		if c, err = kubernetes.NewForConfig(cfg); err != nil {
			return err
		}
		r.mu.Lock()
		r.client = c
		r.mu.Unlock()
	}
	ts := metav1.NewTime(now)
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: r.cfg.NodeName + ".", Namespace: metav1.NamespaceDefault},
		// The kubelet's own Node Events use the node name as UID.
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: r.cfg.NodeName, UID: types.UID(r.cfg.NodeName)},
		Reason:         ExpiringReason,
		Message:        msg,
		Type:           corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "skiff", Host: r.cfg.NodeName},
		FirstTimestamp: ts, LastTimestamp: ts, Count: 1,
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.CoreV1().Events(metav1.NamespaceDefault).Create(cctx, ev, metav1.CreateOptions{})
	return err
}
