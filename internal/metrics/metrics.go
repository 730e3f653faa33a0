// Package metrics holds skiff's own Prometheus metrics: start-up phases,
// certificate expiry, datastore size and compaction, tunnel sessions and
// add-on sync errors.
//
// They are registered in component-base's legacy registry, the registry the
// in-process kube-apiserver serves at /metrics. So the supervisor's port
// serves skiff's metrics beside the apiserver's at /metrics, authenticated
// and authorized exactly like the API (a client certificate or token whose
// user may get the non-resource URL /metrics). The registry is process-wide
// because upstream makes it so; Register is idempotent.
package metrics

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

const namespace = "skiff"

var (
	// StartupPhaseSeconds is how long each start-up phase took, in seconds
	// from the process's start: label phase (datastore, apiserver,
	// kubeconfig, node-registered, node-ready, ready).
	StartupPhaseSeconds = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "startup_phase_seconds",
		Help:           "Seconds from process start until each start-up phase finished.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"phase"})

	// CertificateExpirationTimestamp is each managed certificate's notAfter,
	// in Unix seconds: label file (path of the certificate file).
	CertificateExpirationTimestamp = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "certificate_expiration_timestamp_seconds",
		Help:           "notAfter of each certificate skiff manages, in Unix seconds.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"file"})

	// CertificateRenewals counts leaf certificates re-issued while running
	// or by `skiff certificate rotate`: label file.
	CertificateRenewals = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      namespace,
		Name:           "certificate_renewals_total",
		Help:           "Leaf certificates re-issued since the process started.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"file"})

	// DatastoreSizeBytes is the datastore's size on disk as its engine
	// reports it (SQLite's file, etcd's backend).
	DatastoreSizeBytes = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "datastore_size_bytes",
		Help:           "Size of the datastore in bytes as its engine reports it.",
		StabilityLevel: metrics.ALPHA,
	})

	// DatastoreCompactRevision is the revision of the last compaction.
	DatastoreCompactRevision = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "datastore_compact_revision",
		Help:           "Revision up to which the datastore was last compacted.",
		StabilityLevel: metrics.ALPHA,
	})

	// DatastoreRevision is the datastore's current revision.
	DatastoreRevision = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "datastore_revision",
		Help:           "Current revision of the datastore.",
		StabilityLevel: metrics.ALPHA,
	})

	// TunnelSessions is the number of open agent tunnel sessions per node
	// on this server: label node.
	TunnelSessions = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace:      namespace,
		Name:           "tunnel_sessions",
		Help:           "Open agent tunnel sessions on this server, per node.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"node"})

	// AddonSyncErrors counts failed syncs of each add-on (applying its
	// manifests or running its controllers' work): label addon.
	AddonSyncErrors = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      namespace,
		Name:           "addon_sync_errors_total",
		Help:           "Failed syncs of each add-on since the process started.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"addon"})
)

var once sync.Once

// Register adds skiff's metrics to the legacy registry once per process.
func Register() {
	once.Do(func() {
		legacyregistry.MustRegister(
			StartupPhaseSeconds,
			CertificateExpirationTimestamp,
			CertificateRenewals,
			DatastoreSizeBytes,
			DatastoreCompactRevision,
			DatastoreRevision,
			TunnelSessions,
			AddonSyncErrors,
		)
	})
}
