package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/skiffkube/skiff/internal/datastore"
)

// Each engine runs in a child process of its own (this binary again, told
// what to serve by the environment), so one engine's heap, goroutines and
// background work never share a process with another's or with the load
// generator, and kine's metrics (registered once per process in Kubernetes'
// legacy registry) can be registered by every kine.
const (
	envServe    = "SKIFF_BENCH_DATASTORE_SERVE"    // engine key: sqlite, postgres, mysql, etcd1, etcd3
	envDir      = "SKIFF_BENCH_DATASTORE_DIR"      // the engine's own temporary directory
	envEndpoint = "SKIFF_BENCH_DATASTORE_ENDPOINT" // postgres:// or mysql:// URL (kept out of argv)
)

// serveChild is the child's whole life: start the engine, print
// "endpoint URL" (and "note TEXT" lines) on stdout, serve until stdin closes
// or a signal comes, stop the engine.
func serveChild(engine string) error {
	dir := os.Getenv(envDir)
	if dir == "" {
		return errors.New(envDir + " is not set")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// The parent holds our stdin open; EOF means it is gone.
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()

	var (
		endpoint string
		notes    []string
		shutdown func() error
		err      error
	)
	switch engine {
	case "sqlite", "postgres", "mysql":
		endpoint, notes, shutdown, err = serveKine(ctx, engine, dir, os.Getenv(envEndpoint))
	case "etcd1":
		endpoint, notes, shutdown, err = serveEtcd(ctx, dir, 1)
	case "etcd3":
		endpoint, notes, shutdown, err = serveEtcd(ctx, dir, 3)
	default:
		err = fmt.Errorf("unknown engine %q", engine)
	}
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Printf("note %s\n", n)
	}
	fmt.Printf("endpoint %s\n", endpoint)
	<-ctx.Done()
	return shutdown()
}

// serveKine runs kine exactly as skiff's server does, through skiff's own
// datastore component: the same endpoint.Config, SQLite file and parameters,
// and the apiserver's unix socket. An external database is emptied first
// (kine's one table is dropped), so every run starts from nothing.
func serveKine(ctx context.Context, engine, dir, endpoint string) (string, []string, func() error, error) {
	var notes []string
	if engine != "sqlite" {
		version, err := emptyDatabase(ctx, engine, endpoint)
		if err != nil {
			return "", nil, nil, err
		}
		notes = append(notes, "server "+version)
	}
	// skiff's server dir exists by the time kine starts (it holds the PKI);
	// kine's socket goes there.
	if err := os.MkdirAll(filepath.Dir(datastore.SocketPath(dir)), 0o700); err != nil {
		return "", nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	k := datastore.New(datastore.Config{DataDir: dir, Endpoint: endpoint}, log)
	if err := k.Init(ctx); err != nil {
		return "", nil, nil, err
	}
	if err := k.Start(ctx); err != nil {
		return "", nil, nil, err
	}
	eps := k.Endpoints()
	if len(eps) == 0 {
		_ = k.Stop()
		return "", nil, nil, errors.New("kine started without an endpoint")
	}
	return eps[0], notes, k.Stop, nil
}

// emptyDatabase drops kine's table in the database at endpoint and returns
// the server's version.
func emptyDatabase(ctx context.Context, engine, endpoint string) (string, error) {
	var db *sql.DB
	versionQuery := "SELECT VERSION()"
	var err error
	switch engine {
	case "postgres":
		db, err = sql.Open("pgx", endpoint) // registered by kine's pgsql driver
		versionQuery = "SHOW server_version"
	case "mysql":
		db, err = sql.Open("mysql", strings.TrimPrefix(endpoint, "mysql://"))
	}
	if err != nil {
		return "", fmt.Errorf("%s: opening the database: %w", engine, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var version string
	if err := db.QueryRowContext(ctx, versionQuery).Scan(&version); err != nil {
		return "", fmt.Errorf("%s: asking the server's version: %w", engine, err)
	}
	if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS kine"); err != nil {
		return "", fmt.Errorf("%s: emptying the database (DROP TABLE kine): %w", engine, err)
	}
	return version, nil
}

// serveEtcd runs members embedded etcd members in this process, each with
// its own data dir under dir and loopback ports the kernel picked, with
// etcd's default settings (100 ms heartbeat, 1 s election timeout, fsync on
// every commit). With three members the endpoint is a follower's, as two of
// three servers' apiservers see it (each talks to its local member).
func serveEtcd(ctx context.Context, dir string, members int) (string, []string, func() error, error) {
	type urls struct{ client, peer *url.URL }
	addrs := make([]urls, members)
	for i := range addrs {
		c, err := freeURL()
		if err != nil {
			return "", nil, nil, err
		}
		p, err := freeURL()
		if err != nil {
			return "", nil, nil, err
		}
		addrs[i] = urls{c, p}
	}
	var initial []string
	for i, a := range addrs {
		initial = append(initial, fmt.Sprintf("m%d=%s", i, a.peer))
	}
	etcds := make([]*embed.Etcd, 0, members)
	shutdown := func() error {
		for _, e := range etcds {
			e.Close()
		}
		return nil
	}
	// Members block in StartEtcd only until their listeners are up, so all
	// are started before any is waited for.
	for i, a := range addrs {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		cfg.ListenClientUrls = []url.URL{*a.client}
		cfg.AdvertiseClientUrls = []url.URL{*a.client}
		cfg.ListenPeerUrls = []url.URL{*a.peer}
		cfg.AdvertisePeerUrls = []url.URL{*a.peer}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "skiff-bench"
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.LogLevel = "error"
		cfg.LogOutputs = []string{"stderr"}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			_ = shutdown()
			return "", nil, nil, fmt.Errorf("etcd member %s: %w", cfg.Name, err)
		}
		etcds = append(etcds, e)
	}
	for _, e := range etcds {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			_ = shutdown()
			return "", nil, nil, fmt.Errorf("etcd: %w", err)
		case <-time.After(time.Minute):
			_ = shutdown()
			return "", nil, nil, errors.New("etcd: not ready after a minute")
		case <-ctx.Done():
			_ = shutdown()
			return "", nil, nil, ctx.Err()
		}
	}
	if members == 1 {
		return addrs[0].client.String(), nil, shutdown, nil
	}
	leader := etcds[0].Server.Leader()
	for i, e := range etcds {
		if uint64(e.Server.MemberID()) != uint64(leader) {
			return addrs[i].client.String(), []string{fmt.Sprintf("client talks to member m%d, a follower", i)}, shutdown, nil
		}
	}
	_ = shutdown()
	return "", nil, nil, errors.New("etcd: no follower among three members")
}

// freeURL is an http URL on a loopback port the kernel picks.
func freeURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	return &url.URL{Scheme: "http", Host: addr}, nil
}
