// Package dsstatus reads the datastore's size, revision and last compaction
// through the etcd API every engine speaks here (kine's socket, embedded or
// external etcd) and publishes them as skiff's datastore metrics.
package dsstatus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/logging"
	"github.com/skiffkube/skiff/internal/metrics"
)

// DefaultInterval is how often the datastore is asked: its size changes
// slowly, and a Status call is cheap but not free on SQLite (a page count).
const DefaultInterval = 30 * time.Second

// The keys holding the revision the apiserver last compacted to: etcd
// stores the apiserver's compact_rev_key as written (value: the revision in
// decimal); kine keeps it under a key of its own as "version|revision".
const (
	etcdCompactKey = "compact_rev_key"
	kineCompactKey = "compact_rev_key_apiserver"
)

// Config says which datastore to ask.
type Config struct {
	// Endpoints are the apiserver's etcd URLs (unix:// for kine).
	Endpoints []string
	// CAFile, CertFile and KeyFile are the client's TLS files for an etcd
	// over https; empty for kine's socket.
	CAFile, CertFile, KeyFile string
	// Interval between reads; zero means DefaultInterval.
	Interval time.Duration
}

// Poller is the component that publishes the datastore metrics.
type Poller struct {
	cfg  Config
	log  *slog.Logger
	warn *logging.Throttle
	component.Runner
}

// New returns the poller component.
func New(cfg Config, log *slog.Logger) *Poller {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	log = log.With("component", "datastore-status")
	return &Poller{cfg: cfg, log: log, warn: logging.NewThrottle(log, 10*time.Minute)}
}

func (p *Poller) Name() string { return "datastore-status" }

func (p *Poller) Init(context.Context) error {
	if len(p.cfg.Endpoints) == 0 {
		return errors.New("datastore-status: no endpoints")
	}
	metrics.Register()
	return nil
}

func (p *Poller) Start(context.Context) error {
	p.Go(func(ctx context.Context) error {
		cli, err := p.client(ctx)
		if err != nil {
			return fmt.Errorf("datastore-status: %w", err)
		}
		defer cli.Close()
		for {
			if err := Publish(ctx, cli); err != nil && ctx.Err() == nil {
				p.warn.Log("read", "reading the datastore's status for its metrics", "err", err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(p.cfg.Interval):
			}
		}
	})
	return nil
}

// Ready is nil at once: metrics are not something start-up waits for.
func (p *Poller) Ready() error { return nil }

func (p *Poller) Stop() error { return p.Runner.Stop(2 * time.Second) }

func (p *Poller) client(ctx context.Context) (*clientv3.Client, error) {
	cc := clientv3.Config{Endpoints: p.cfg.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Context: ctx}
	if p.cfg.CAFile != "" || p.cfg.CertFile != "" {
		info := transport.TLSInfo{TrustedCAFile: p.cfg.CAFile, CertFile: p.cfg.CertFile, KeyFile: p.cfg.KeyFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("datastore client TLS: %w", err)
		}
		cc.TLS = tc
	}
	return clientv3.New(cc)
}

// Publish reads the first endpoint's status and the last compaction once
// and sets metrics.DatastoreSizeBytes, DatastoreRevision and
// DatastoreCompactRevision. A missing compaction key (nothing compacted
// yet) leaves the compaction metric at 0.
func Publish(ctx context.Context, cli *clientv3.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	metrics.DatastoreSizeBytes.Set(float64(st.DbSize))
	compacted, current, err := Revisions(ctx, cli)
	if err != nil {
		return err
	}
	metrics.DatastoreRevision.Set(float64(current))
	metrics.DatastoreCompactRevision.Set(float64(compacted))
	return nil
}

// Revisions returns the revision the apiserver last compacted the
// datastore to (0 when it has not compacted yet) and the current revision,
// from the responses' headers (kine's Status carries no revision).
func Revisions(ctx context.Context, cli *clientv3.Client) (compacted, current int64, err error) {
	for _, key := range []string{kineCompactKey, etcdCompactKey} {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return 0, 0, fmt.Errorf("reading %s: %w", key, err)
		}
		current = max(current, resp.Header.Revision)
		if compacted != 0 || len(resp.Kvs) == 0 {
			continue
		}
		if rev, ok := ParseCompactValue(resp.Kvs[0].Value); ok {
			compacted = rev
		}
	}
	return compacted, current, nil
}

// ParseCompactValue reads a compaction key's value: "REV" (etcd, as the
// apiserver writes it) or "VERSION|REV" (kine's own key). ok is false when
// it holds no revision.
func ParseCompactValue(v []byte) (rev int64, ok bool) {
	s := string(v)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '|' {
			s = s[i+1:]
			break
		}
	}
	rev, err := strconv.ParseInt(s, 10, 64)
	return rev, err == nil && rev > 0
}
