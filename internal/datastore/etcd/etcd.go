// Package etcd runs embedded etcd (go.etcd.io/etcd/server/v3/embed) in the
// server process: a new one-member cluster (--cluster-init), a server
// joining an existing cluster as a learner that is promoted once it has
// caught up (--server), or a restart on a data dir that holds etcd data.
//
// Files: data under <data-dir>/server/db/etcd (the member name in its file
// "name"), CAs and certificates under <data-dir>/server/tls/etcd. Clients
// (the apiserver, snapshots) use https://127.0.0.1:2379 with the client
// certificate; peers talk on https://<advertise-ip>:2380; metrics are on
// http://127.0.0.1:2381 (every address with --etcd-expose-metrics).
package etcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/storage/wal"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/controlplane"
)

// Config is what one embedded etcd member runs with.
type Config struct {
	Layout controlplane.Layout
	// MemberName is the member's name: MemberName(Layout) when stored,
	// else a NewMemberName, which Start stores.
	MemberName string
	// AdvertiseIP is where other members reach this one (peer and client).
	AdvertiseIP net.IP
	// Hostname goes into the serving certificate.
	Hostname string
	// Args are --etcd-arg settings, key=value; see ApplyArgs.
	Args []string
	// ExposeMetrics serves metrics on every address, not only loopback.
	ExposeMetrics bool
	// Join, on a data dir without etcd data, makes this member join the
	// cluster whose members answer at these client URLs (as a learner,
	// promoted once caught up). Ignored when the data dir holds etcd data.
	Join []string
	// Seed, when set, runs once the member serves, with a client of it:
	// the migration of SQLite data into a new cluster.
	Seed func(ctx context.Context, cli *clientv3.Client) error
}

// Etcd is the embedded etcd component.
type Etcd struct {
	component.Runner
	cfg Config
	log *slog.Logger

	etcd     *embed.Etcd
	name     string
	ready    bool
	stopping atomic.Bool
}

// New returns the embedded etcd component for cfg.
func New(cfg Config, log *slog.Logger) *Etcd {
	return &Etcd{cfg: cfg, log: log.With("component", "etcd")}
}

func (e *Etcd) Name() string { return "etcd" }

// memberDir is etcd's member directory under l's etcd data dir.
func memberDir(l controlplane.Layout) string { return filepath.Join(l.EtcdDataDir(), "member") }

// HasData reports whether l's data dir holds embedded etcd data, a WAL
// (member/wal/*.wal, as K3s checks): a server started on it runs etcd
// again, with or without --cluster-init.
func HasData(l controlplane.Layout) bool {
	return wal.Exist(filepath.Join(memberDir(l), "wal"))
}

// Unfinished reports an etcd member directory without a WAL: etcd creates
// member/ (and its db) before it looks for a WAL, fetches the cluster from
// its peers or writes the WAL, so this is a start that died first. It holds
// no data: a first --cluster-init starts new on it, and a join (whose
// learner may have been added already) starts over (PrepareJoin). It is
// never started as a new cluster by a server that joins.
func Unfinished(l controlplane.Layout) bool {
	fi, err := os.Stat(memberDir(l))
	return err == nil && fi.IsDir() && !HasData(l)
}

// PrepareJoin, on a data dir that is about to join a cluster, moves an
// Unfinished member directory aside, to <etcd data dir>/member.unfinished-
// <unix seconds>, and returns where ("" when there was none): etcd must
// not find it, or it would reuse that attempt's db. Errors name the paths.
func PrepareJoin(l controlplane.Layout, now time.Time) (string, error) {
	if !Unfinished(l) {
		return "", nil
	}
	aside := fmt.Sprintf("%s.unfinished-%d", memberDir(l), now.Unix())
	if err := os.Rename(memberDir(l), aside); err != nil {
		return "", fmt.Errorf("etcd: moving the unfinished member directory %s aside: %w", memberDir(l), err)
	}
	return aside, nil
}

// nameFile keeps the member name across restarts.
func nameFile(l controlplane.Layout) string { return filepath.Join(l.EtcdDataDir(), "name") }

// MemberName is this data dir's etcd member name, "" before the first start.
func MemberName(l controlplane.Layout) string {
	b, err := os.ReadFile(nameFile(l))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// NewMemberName makes a member name for node: <node>-<8 hex digits>,
// unique even when a machine is rebuilt under the same name.
func NewMemberName(node string) (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	if node == "" {
		node = "skiff"
	}
	return node + "-" + hex.EncodeToString(b), nil
}

// storeName keeps the member name for the next starts.
func storeName(l controlplane.Layout, name string) error {
	if MemberName(l) == name {
		return nil
	}
	if err := atomicfile.Write(nameFile(l), []byte(name+"\n"), 0o600, 0o700); err != nil {
		return fmt.Errorf("etcd: storing the member name: %w", err)
	}
	return nil
}

func (e *Etcd) Init(context.Context) error {
	if err := CheckArgs(e.cfg.Args); err != nil {
		return err
	}
	if e.cfg.AdvertiseIP == nil {
		return errors.New("etcd: no advertise address")
	}
	if e.cfg.MemberName == "" {
		return errors.New("etcd: no member name")
	}
	if err := os.MkdirAll(e.cfg.Layout.EtcdDataDir(), 0o700); err != nil {
		return fmt.Errorf("etcd: creating %s: %w", e.cfg.Layout.EtcdDataDir(), err)
	}
	// etcd refuses a data dir others may read.
	return os.Chmod(e.cfg.Layout.EtcdDataDir(), 0o700)
}

func hostURL(scheme string, ip net.IP, port int) string {
	return scheme + "://" + net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

func urls(ss ...string) []url.URL {
	out := make([]url.URL, 0, len(ss))
	for _, s := range ss {
		u, _ := url.Parse(s)
		out = append(out, *u)
	}
	return out
}

// PeerURL is the peer URL of a member advertising ip.
func PeerURL(ip net.IP) string { return hostURL("https", ip, PeerPort) }

// ClientURL is the client URL of a member advertising ip.
func ClientURL(ip net.IP) string { return hostURL("https", ip, ClientPort) }

// embedConfig is etcd's configuration for this member.
func (e *Etcd) embedConfig(name string) (*embed.Config, error) {
	l := e.cfg.Layout
	c := embed.NewConfig()
	c.Name = name
	c.Dir = l.EtcdDataDir()
	c.ListenClientUrls = urls(LocalClientURL, ClientURL(e.cfg.AdvertiseIP))
	c.AdvertiseClientUrls = urls(ClientURL(e.cfg.AdvertiseIP))
	c.ListenPeerUrls = urls(PeerURL(e.cfg.AdvertiseIP))
	c.AdvertisePeerUrls = urls(PeerURL(e.cfg.AdvertiseIP))
	metricsIP := net.IPv4(127, 0, 0, 1)
	if e.cfg.ExposeMetrics {
		metricsIP = net.IPv4zero
	}
	c.ListenMetricsUrls = urls(hostURL("http", metricsIP, MetricsPort))
	c.InitialCluster = name + "=" + PeerURL(e.cfg.AdvertiseIP)
	c.InitialClusterToken = "skiff"
	c.ClusterState = embed.ClusterStateFlagNew
	c.ClientTLSInfo = transport.TLSInfo{
		CertFile: servingPair(l).Cert, KeyFile: servingPair(l).Key,
		ClientCertFile: servingPair(l).Cert, ClientKeyFile: servingPair(l).Key,
		TrustedCAFile: l.EtcdServerCA().Cert, ClientCertAuth: true,
	}
	c.PeerTLSInfo = transport.TLSInfo{
		CertFile: peerPair(l).Cert, KeyFile: peerPair(l).Key,
		ClientCertFile: peerPair(l).Cert, ClientKeyFile: peerPair(l).Key,
		TrustedCAFile: l.EtcdPeerCA().Cert, ClientCertAuth: true,
	}
	// The apiserver compacts every 5 minutes; etcd's own compactor stays off,
	// as in K3s, unless --etcd-arg turns it on.
	c.Logger = "zap"
	c.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(e.log, &e.stopping))
	if err := ApplyArgs(c, e.cfg.Args); err != nil {
		return nil, err
	}
	return c, nil
}

func (e *Etcd) Start(ctx context.Context) error {
	l := e.cfg.Layout
	issued, err := EnsureCertificates(l, CertInputs{AdvertiseIP: e.cfg.AdvertiseIP, Hostname: e.cfg.Hostname}, time.Now())
	if err != nil {
		return err
	}
	for _, f := range issued {
		e.log.Debug("certificate issued", "file", f)
	}
	existing := HasData(l)
	if !existing && len(e.cfg.Join) > 0 {
		// A join that died after etcd made its member directory: that
		// directory would not join again, and as a new cluster it would be
		// a second cluster with the same CAs.
		aside, err := PrepareJoin(l, time.Now())
		if err != nil {
			return err
		}
		if aside != "" {
			e.log.Warn("an earlier join of this server never started its etcd member: joining again", "kept", aside)
		}
	}
	name := e.cfg.MemberName
	if err := storeName(l, name); err != nil {
		return err
	}
	e.name = name
	c, err := e.embedConfig(name)
	if err != nil {
		return err
	}
	if !existing && len(e.cfg.Join) > 0 {
		initial, err := e.addLearner(ctx, name)
		if err != nil {
			return err
		}
		c.InitialCluster = initial
		c.ClusterState = embed.ClusterStateFlagExisting
	}
	begin := time.Now()
	etcd, err := embed.StartEtcd(c)
	if err != nil {
		return fmt.Errorf("etcd: starting member %s: %w", name, err)
	}
	e.etcd = etcd
	select {
	case <-etcd.Server.ReadyNotify():
	case err := <-etcd.Err():
		etcd.Close()
		return fmt.Errorf("etcd: member %s: %w", name, err)
	case <-ctx.Done():
		etcd.Close()
		return fmt.Errorf("etcd: waiting for member %s to join its cluster: %w", name, ctx.Err())
	}
	if etcd.Server.IsLearner() {
		if err := e.promote(ctx); err != nil {
			etcd.Close()
			return err
		}
	}
	if e.cfg.Seed != nil {
		if err := e.seed(ctx); err != nil {
			etcd.Close()
			return err
		}
	}
	how := "started"
	switch {
	case existing:
		how = "restarted"
	case len(e.cfg.Join) > 0:
		how = "joined"
	}
	e.log.Info("etcd member "+how, "member", name, "members", len(etcd.Server.Cluster().Members()), "duration", time.Since(begin).Round(time.Millisecond))
	e.ready = true
	e.Go(func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case err := <-etcd.Err():
			return fmt.Errorf("etcd: %w", err)
		case <-etcd.Server.StopNotify():
			if etcd.Server.Cluster().Member(etcd.Server.MemberID()) != nil {
				return errors.New("etcd: the member stopped")
			}
			return fmt.Errorf("etcd: member %s was removed from the cluster (its node was deleted?): to join again, remove %s and start with --server", name, l.EtcdDataDir())
		}
	})
	return nil
}

// addLearner adds this member to the cluster as a learner through the
// members at cfg.Join and returns the initial-cluster setting it starts
// with (see join).
func (e *Etcd) addLearner(ctx context.Context, name string) (string, error) {
	cc, err := ClientConfig(e.cfg.Layout)
	if err != nil {
		return "", err
	}
	cc.Endpoints = e.cfg.Join
	cc.Context = ctx
	cli, err := clientv3.New(cc)
	if err != nil {
		return "", fmt.Errorf("etcd: reaching the cluster's members %s: %w", strings.Join(e.cfg.Join, ","), err)
	}
	defer cli.Close()
	return e.join(ctx, cli, name, time.Now, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
			return nil
		}
	})
}

// clusterAPI is the part of etcd's cluster API a join uses.
type clusterAPI interface {
	MemberList(ctx context.Context, opts ...clientv3.OpOption) (*clientv3.MemberListResponse, error)
	MemberRemove(ctx context.Context, id uint64) (*clientv3.MemberRemoveResponse, error)
	MemberAddAsLearner(ctx context.Context, peerAddrs []string) (*clientv3.MemberAddResponse, error)
}

// StaleLearnerAfter is how long a join waits on an unstarted learner (no
// name: its etcd never ran) before taking it for one left by a failed join
// and removing it. A server that added a learner starts it within seconds.
const StaleLearnerAfter = 2 * time.Minute

// join adds this member (name, this server's peer URL) as a learner and
// returns the initial-cluster setting it starts with: every member's peer
// URLs, an unstarted member's under the empty name, as `etcdctl member add`
// prints them (etcd matches them to the cluster's members by peer URL and
// wants them all). now is the clock and pause waits between attempts.
//
// A learner on this server's own peer URL that never started (an earlier
// attempt of this server) is removed first. etcd takes no more learners
// than max-learners (1 by default) and no new member until its leader has
// seen every voter for 5 s: the join waits and retries. An unstarted
// learner of another server that keeps it waiting for StaleLearnerAfter
// (by now) is removed, with a warning; when that fails, or ctx ends, the
// error names it and how to remove it by hand.
func (e *Etcd) join(ctx context.Context, api clusterAPI, name string, now func() time.Time, pause func(context.Context) error) (string, error) {
	peer := PeerURL(e.cfg.AdvertiseIP)
	list, err := api.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("etcd: listing the cluster's members at %s: %w", strings.Join(e.cfg.Join, ","), err)
	}
	for _, m := range list.Members {
		if !slices.Contains(m.PeerURLs, peer) {
			continue
		}
		if m.Name != "" {
			return "", fmt.Errorf("etcd: the cluster already has a started member %s on this server's peer URL %s, but this data dir holds no etcd data: remove that member (kubectl delete node) or restore this data dir", m.Name, peer)
		}
		if _, err := api.MemberRemove(ctx, m.ID); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
			return "", fmt.Errorf("etcd: removing the unstarted member %x left by an earlier join of this server: %w", m.ID, err)
		}
	}
	var (
		resp    *clientv3.MemberAddResponse
		seen    = map[uint64]time.Time{} // unstarted learners, when first seen
		waiting []string                 // what keeps this join waiting
	)
	for attempt := 0; ; attempt++ {
		resp, err = api.MemberAddAsLearner(ctx, []string{peer})
		if err == nil {
			break
		}
		if !retryableAdd(err) {
			return "", fmt.Errorf("etcd: adding this server as a learner: %w", err)
		}
		waiting = nil
		if isErr(err, rpctypes.ErrTooManyLearners) {
			var cerr error
			if waiting, cerr = e.clearStaleLearners(ctx, api, seen, now()); cerr != nil {
				return "", cerr
			}
		}
		lvl := slog.LevelDebug
		if attempt == 0 {
			lvl = slog.LevelInfo
		}
		e.log.Log(ctx, lvl, "waiting for the cluster to take another member", "reason", err)
		if perr := pause(ctx); perr != nil {
			on := ""
			if len(waiting) > 0 {
				on = "; waiting on " + strings.Join(waiting, ", ")
			}
			return "", fmt.Errorf("etcd: adding this server as a learner: %w (last: %v)%s", perr, err, on)
		}
	}
	var initial []string
	for _, m := range resp.Members {
		n := m.Name
		if m.ID == resp.Member.ID {
			n = name
		}
		for _, u := range m.PeerURLs {
			initial = append(initial, n+"="+u)
		}
	}
	e.log.Info("added this server to etcd as a learner", "member", name, "peer", peer)
	return strings.Join(initial, ","), nil
}

// clearStaleLearners removes the unstarted learners first seen (seen,
// updated) StaleLearnerAfter before now, and describes those it still
// waits on, with how to remove them by hand.
func (e *Etcd) clearStaleLearners(ctx context.Context, api clusterAPI, seen map[uint64]time.Time, now time.Time) ([]string, error) {
	list, err := api.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd: listing the cluster's members at %s: %w", strings.Join(e.cfg.Join, ","), err)
	}
	var waiting []string
	for _, m := range list.Members {
		if !m.IsLearner {
			continue
		}
		if m.Name != "" {
			waiting = append(waiting, fmt.Sprintf("learner %s (%x) catching up", m.Name, m.ID))
			continue
		}
		first, ok := seen[m.ID]
		if !ok {
			seen[m.ID] = now
			e.log.Warn("an unstarted etcd learner keeps this server from joining; it is removed if it has not started in "+StaleLearnerAfter.String(), "id", fmt.Sprintf("%x", m.ID), "peer", m.PeerURLs)
			first = now
		}
		if now.Sub(first) < StaleLearnerAfter {
			waiting = append(waiting, fmt.Sprintf("unstarted learner %x (peer %s): %s", m.ID, strings.Join(m.PeerURLs, ","), e.removeHint(m.ID)))
			continue
		}
		if _, err := api.MemberRemove(ctx, m.ID); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
			return nil, fmt.Errorf("etcd: removing learner %x (peer %s), unstarted for %s (a failed join?): %w; %s",
				m.ID, strings.Join(m.PeerURLs, ","), now.Sub(first).Round(time.Second), err, e.removeHint(m.ID))
		}
		delete(seen, m.ID)
		e.log.Warn("removed an etcd learner that never started (left by a failed join)", "id", fmt.Sprintf("%x", m.ID), "peer", m.PeerURLs, "unstartedFor", now.Sub(first).Round(time.Second))
	}
	return waiting, nil
}

// removeHint says how to remove member id by hand, from this server.
func (e *Etcd) removeHint(id uint64) string {
	f := ClientTLSFiles(e.cfg.Layout)
	return fmt.Sprintf("remove it with: etcdctl --endpoints %s --cacert %s --cert %s --key %s member remove %x",
		strings.Join(e.cfg.Join, ","), f.CAFile, f.CertFile, f.KeyFile, id)
}

func (e *Etcd) seed(ctx context.Context) error {
	cc, err := ClientConfig(e.cfg.Layout)
	if err != nil {
		return err
	}
	cc.Context = ctx
	cli, err := clientv3.New(cc)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	return e.cfg.Seed(ctx, cli)
}

// retryableAdd reports a member-add error that passes once another joining
// member is promoted and connected.
func retryableAdd(err error) bool {
	for _, e := range []error{rpctypes.ErrTooManyLearners, rpctypes.ErrUnhealthy, rpctypes.ErrMemberNotEnoughStarted} {
		if isErr(err, e) {
			return true
		}
	}
	return false
}

// isErr matches an etcd error, whether typed or as text from the wire.
func isErr(err, target error) bool {
	return errors.Is(err, target) || strings.Contains(err.Error(), target.Error())
}

// promote makes this learner a voting member, retrying while it catches up
// with the leader.
func (e *Etcd) promote(ctx context.Context) error {
	cc, err := ClientConfig(e.cfg.Layout)
	if err != nil {
		return err
	}
	s := e.etcd.Server
	id := uint64(s.MemberID())
	for {
		var eps []string
		for _, m := range s.Cluster().Members() {
			if !m.IsLearner && uint64(m.ID) != id {
				eps = append(eps, m.ClientURLs...)
			}
		}
		err := e.promoteOnce(ctx, cc, eps, id)
		if err == nil || !s.IsLearner() {
			e.log.Debug("promoted to a voting member", "member", e.name)
			return nil
		}
		e.log.Debug("not promoted yet", "member", e.name, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd: promoting learner %s: %w (last: %v)", e.name, ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

func (e *Etcd) promoteOnce(ctx context.Context, cc clientv3.Config, eps []string, id uint64) error {
	if len(eps) == 0 {
		return errors.New("no voting member with a client URL")
	}
	cc.Endpoints = eps
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cc.Context = cctx
	cli, err := clientv3.New(cc)
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.MemberPromote(cctx, id)
	if err != nil && strings.Contains(err.Error(), membership.ErrMemberNotLearner.Error()) {
		return nil
	}
	return err
}

func (e *Etcd) Ready() error {
	if !e.ready {
		return errors.New("etcd not started")
	}
	return nil
}

// Endpoints are the etcd URLs the apiserver uses: the local member.
func (e *Etcd) Endpoints() []string { return []string{LocalClientURL} }

// Stop closes the member (it leaves the cluster's quorum until it starts
// again) and ends the watcher.
func (e *Etcd) Stop() error {
	e.stopping.Store(true)
	_ = e.Runner.Stop(time.Second)
	if e.etcd == nil {
		return nil
	}
	done := make(chan struct{})
	go func() { e.etcd.Close(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("etcd did not stop within 10s")
	}
}
