// Package datastore runs the cluster's storage backend: kine in process, which
// speaks the etcd API to the apiserver on a unix socket and stores into SQLite
// (the default), PostgreSQL or MySQL, or passes an external etcd through.
package datastore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/k3s-io/kine/pkg/drivers/generic"
	"github.com/k3s-io/kine/pkg/drivers/sqlite"
	"github.com/k3s-io/kine/pkg/endpoint"
	kinetls "github.com/k3s-io/kine/pkg/tls"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
)

// Config says where the data lives.
type Config struct {
	// DataDir is skiff's data dir; SQLite lives under server/db.
	DataDir string
	// Endpoint is --datastore-endpoint; empty means SQLite in DataDir.
	Endpoint string
	// CAFile, CertFile and KeyFile are --datastore-cafile, -certfile and
	// -keyfile: the TLS kine uses towards PostgreSQL, MySQL or an external
	// etcd (and, for etcd, the apiserver too).
	CAFile, CertFile, KeyFile string
}

// Kine is the datastore component.
type Kine struct {
	cfg  Config
	log  *slog.Logger
	kind string

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	endpoints []string
	tls       kinetls.Config
	ready     bool
}

// New returns the datastore component for cfg.
func New(cfg Config, log *slog.Logger) *Kine {
	return &Kine{cfg: cfg, log: log.With("component", "datastore")}
}

func (k *Kine) Name() string { return "datastore" }

// SQLitePath is where the default datastore keeps its file.
func SQLitePath(dataDir string) string {
	return filepath.Join(dataDir, "server", "db", "state.db")
}

// SocketPath is the unix socket the apiserver reaches kine on. Kine removes a
// stale one left by a crash before listening.
func SocketPath(dataDir string) string {
	return filepath.Join(dataDir, "server", "kine.sock")
}

func (k *Kine) Init(context.Context) error {
	kind, err := config.DatastoreKind(k.cfg.Endpoint)
	if err != nil {
		return err
	}
	k.kind = kind
	if kind == "sqlite" {
		if err := os.MkdirAll(filepath.Dir(SQLitePath(k.cfg.DataDir)), 0o700); err != nil {
			return fmt.Errorf("creating database directory: %w", err)
		}
	}
	return nil
}

// endpoint is what kine is told to open. SQLite gets an absolute path, since
// kine's own default is relative to the working directory.
func (k *Kine) endpoint() string {
	if k.cfg.Endpoint == "" || strings.TrimSuffix(k.cfg.Endpoint, "://") == "sqlite" {
		return "sqlite://" + SQLitePath(k.cfg.DataDir) + "?" + sqlite.DefaultParams
	}
	return k.cfg.Endpoint
}

func (k *Kine) Start(ctx context.Context) error {
	// An external datastore that cannot be reached is waited for, saying
	// so, rather than left to kine's retries.
	if err := k.waitReachable(ctx); err != nil {
		return err
	}
	// The context kine serves under must outlive Start; Stop cancels it.
	kctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	// These are the defaults kine's CLI fills in; its library API has none.
	cfg := endpoint.Config{
		WaitGroup: &k.wg,
		Listener:  "unix://" + SocketPath(k.cfg.DataDir),
		Endpoint:  k.endpoint(),
		BackendTLSConfig: kinetls.Config{
			CAFile:   k.cfg.CAFile,
			CertFile: k.cfg.CertFile,
			KeyFile:  k.cfg.KeyFile,
		},
		ConnectionPoolConfig: generic.ConnectionPoolConfig{
			MaxIdle:     20,
			MaxLifetime: 0,
			MaxOpen:     0,
		},
		MetricsRegisterer:   legacyregistry.Registerer(),
		NotifyInterval:      5 * time.Second,
		EmulatedETCDVersion: "3.6.11",
		CompactInterval:     5 * time.Minute,
		CompactTimeout:      5 * time.Second,
		CompactMinRetain:    1000,
		CompactBatchSize:    1000,
		PollBatchSize:       500,
		PollInterval:        time.Second,
	}
	type result struct {
		etcd endpoint.ETCDConfig
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var etcd endpoint.ETCDConfig
		// Guarded: a panic while opening the datastore is this start's error.
		err := component.Safely(func() (err error) {
			etcd, err = endpoint.Listen(kctx, cfg)
			return err
		})
		done <- result{etcd, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			cancel()
			return fmt.Errorf("opening %s datastore %s: %w", k.kind, config.RedactURL(k.cfg.Endpoint), redactErr(r.err, k.cfg.Endpoint))
		}
		k.endpoints = r.etcd.Endpoints
		k.tls = r.etcd.TLSConfig
		k.ready = true
		k.log.Debug("kine listening", "endpoints", strings.Join(k.endpoints, ","))
		return nil
	case <-ctx.Done():
		cancel()
		return fmt.Errorf("opening %s: %w", k.describe(), ctx.Err())
	}
}

// describe names the datastore for messages: its kind and endpoint,
// password hidden, or SQLite's file.
func (k *Kine) describe() string {
	if k.kind == "sqlite" {
		return "sqlite datastore " + SQLitePath(k.cfg.DataDir)
	}
	return k.kind + " datastore " + config.RedactURL(k.cfg.Endpoint)
}

// redactErr keeps a driver's error from repeating the endpoint with its
// password; RedactURL is the one place that knows where a password sits.
func redactErr(err error, endpoint string) error {
	redacted := config.RedactURL(endpoint)
	if endpoint == "" || redacted == endpoint || !strings.Contains(err.Error(), endpoint) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), endpoint, redacted))
}

func (k *Kine) Ready() error {
	if !k.ready {
		return errors.New("datastore not started")
	}
	return nil
}

// Endpoints are the etcd URLs the apiserver uses. Valid after Start.
func (k *Kine) Endpoints() []string { return k.endpoints }

// Stop cancels kine and waits for its gRPC server and database loops.
func (k *Kine) Stop() error {
	if k.cancel == nil {
		return nil
	}
	k.cancel()
	done := make(chan struct{})
	go func() { k.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("kine did not stop within 5s")
	}
}

// EtcdServers are the etcd URLs the apiserver is given for a datastore
// endpoint: kine's socket, or the external etcd cluster itself. They are
// known before the datastore starts, so every command line can be planned
// up front.
func EtcdServers(dataDir, endpoint string) []string {
	if kind, err := config.DatastoreKind(endpoint); err == nil && kind == "etcd" {
		return strings.Split(endpoint, ",")
	}
	return []string{"unix://" + SocketPath(dataDir)}
}
