package datastore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/skiffkube/skiff/internal/config"
)

// dialTimeout bounds one reachability attempt towards an external datastore.
const dialTimeout = 3 * time.Second

// retryWait is the wait before the attempt after n failed ones: 1 s, 2 s,
// 4 s, then 5 s.
func retryWait(n int) time.Duration {
	return min(time.Duration(1<<min(n-1, 3))*time.Second, 5*time.Second)
}

// waitReachable waits until a TCP connection to the external datastore's
// address succeeds, logging one warning per failed attempt with the
// endpoint (password hidden) and what failed, so a server waiting for its
// database says so instead of hanging silently. It returns at once for
// SQLite and for endpoints it cannot find an address in (unix sockets);
// ctx's end ends the wait with ctx's error.
func (k *Kine) waitReachable(ctx context.Context) error {
	addrs := dialTargets(k.kind, k.cfg.Endpoint)
	if len(addrs) == 0 {
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := dialAny(ctx, addrs)
		if err == nil {
			if attempt > 1 {
				k.log.Info("datastore reachable", "endpoint", config.RedactURL(k.cfg.Endpoint), "attempt", attempt)
			}
			return nil
		}
		wait := retryWait(attempt)
		k.log.Warn(fmt.Sprintf("datastore unreachable, retrying in %s", wait),
			"endpoint", config.RedactURL(k.cfg.Endpoint), "attempt", attempt, "error", redactErr(err, k.cfg.Endpoint).Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s datastore %s: %w", k.kind, config.RedactURL(k.cfg.Endpoint), ctx.Err())
		case <-time.After(wait):
		}
	}
}

// dialAny tries each address in turn; nil once one answers.
func dialAny(ctx context.Context, addrs []string) error {
	var errs []error
	d := net.Dialer{Timeout: dialTimeout}
	for _, a := range addrs {
		c, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			c.Close()
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// dialTargets are the host:port addresses of an external datastore
// endpoint: postgres://[user[:pass]@]host[:port][,host2...]/db,
// mysql://[user[:pass]@]tcp(host[:port])/db, or etcd's comma-separated
// http(s)://host:port URLs. Unix sockets and forms it does not know give
// none (nothing to wait for).
func dialTargets(kind, endpoint string) []string {
	var defPort string
	switch kind {
	case "postgres":
		defPort = "5432"
	case "mysql":
		defPort = "3306"
	case "etcd":
		defPort = "2379"
	default:
		return nil
	}
	var hosts []string
	if kind == "etcd" {
		for _, u := range strings.Split(endpoint, ",") {
			scheme, rest, ok := strings.Cut(strings.TrimSpace(u), "://")
			if !ok || strings.HasPrefix(scheme, "unix") {
				continue
			}
			hosts = append(hosts, hostPart(rest))
		}
	} else {
		_, rest, _ := strings.Cut(endpoint, "://")
		// The user info ends at the last '@', as in config.RedactURL.
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = rest[at+1:]
		}
		if kind == "mysql" {
			inner, ok := strings.CutPrefix(rest, "tcp(")
			if !ok {
				return nil // unix(...) or a form without an address
			}
			h, _, _ := strings.Cut(inner, ")")
			hosts = []string{h}
		} else {
			hosts = strings.Split(hostPart(rest), ",")
		}
	}
	var out []string
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(strings.Trim(h, "[]"), defPort)
		}
		out = append(out, h)
	}
	return out
}

// hostPart is "host:port" of "host:port/path?query".
func hostPart(s string) string {
	if i := strings.IndexAny(s, "/?"); i >= 0 {
		return s[:i]
	}
	return s
}

// Client is an etcd client for the datastore as the apiserver sees it:
// kine's socket, or the external etcd with --datastore-cafile, -certfile
// and -keyfile. Valid after Start; the caller closes it.
func (k *Kine) Client() (*clientv3.Client, error) {
	if !k.ready {
		return nil, errors.New("datastore not started")
	}
	tlsConfig, err := k.tls.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("datastore TLS: %w", err)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   k.endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         tlsConfig,
		// Keep clientv3's zap logger quiet: its errors come back to us.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("datastore client: %w", err)
	}
	return c, nil
}
