package snapshot

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"
)

// Member is an etcd member as the local data dir records it.
type Member struct {
	Name       string
	PeerURLs   []string
	ClientURLs []string
}

// ReadMembers returns the members that the etcd data dir's backend records
// (etcd must not be running: its database is opened).
func ReadMembers(dataDir string) (members []Member, err error) {
	db := filepath.Join(dataDir, "member", "snap", "db")
	if _, err := os.Stat(db); err != nil {
		return nil, fmt.Errorf("etcd data dir %s: %w", dataDir, err)
	}
	be := backend.NewDefaultBackend(zap.NewNop(), db)
	defer be.Close()
	defer func() {
		// MustRead panics on a broken database; that is this call's error.
		if r := recover(); r != nil {
			err = fmt.Errorf("reading the etcd members from %s: %v", db, r)
		}
	}()
	ms, _ := schema.NewMembershipBackend(zap.NewNop(), be).MustReadMembersFromBackend()
	for _, m := range ms {
		members = append(members, Member{Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs})
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	return members, nil
}

// ProbeCAs verify that an answering URL is a member of this cluster: a TLS
// URL counts as up only when its certificate verifies against the etcd CA
// for it, so that an unrelated service on the port (or a network that
// answers every connection) is not mistaken for a member.
type ProbeCAs struct {
	// ServerCAFile verifies members' client URLs; PeerCAFile their peer URLs.
	ServerCAFile, PeerCAFile string
}

// MembersUp returns, for every member with a URL that answers as an etcd
// member, "<name> at <url>". The local member is not running while the
// caller holds the data dir, so any answer is another member's.
func MembersUp(ctx context.Context, members []Member, cas ProbeCAs) []string {
	var up []string
	for _, m := range members {
		for _, u := range append(append([]string{}, m.ClientURLs...), m.PeerURLs...) {
			ca := cas.ServerCAFile
			if contains(m.PeerURLs, u) {
				ca = cas.PeerCAFile
			}
			if answers(ctx, u, ca) {
				up = append(up, fmt.Sprintf("%s at %s", m.Name, u))
				break
			}
		}
	}
	return up
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// answers reports whether an etcd member serves at raw: for https, a TLS
// handshake whose certificate verifies against caFile; for http, a
// /version answer naming an etcd server.
func answers(ctx context.Context, raw, caFile string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	switch u.Scheme {
	case "https":
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return false
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return false
		}
		verified := false
		host, _, _ := net.SplitHostPort(u.Host)
		d := tls.Dialer{Config: &tls.Config{
			RootCAs:    pool,
			ServerName: host,
			MinVersion: tls.VersionTLS12,
			// Runs only once the chain verified. The member may still
			// refuse us for want of a client certificate: it is up all the
			// same.
			VerifyConnection: func(tls.ConnectionState) error { verified = true; return nil },
		}}
		conn, err := d.DialContext(ctx, "tcp", u.Host)
		if err == nil {
			conn.Close()
		}
		return verified
	case "http":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(raw, "/")+"/version", nil)
		if err != nil {
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var v struct {
			Server string `json:"etcdserver"`
		}
		return json.NewDecoder(resp.Body).Decode(&v) == nil && v.Server != ""
	}
	return false
}

// ForceNewCluster makes the member in dataDir the only member of its
// cluster, keeping its data: etcd is started once on it with
// --force-new-cluster, on loopback ports only, until it serves, then
// stopped. name is the member's name. etcd must not be running.
func ForceNewCluster(ctx context.Context, dataDir, name string) error {
	if _, err := os.Stat(filepath.Join(dataDir, "member")); err != nil {
		return fmt.Errorf("etcd data dir %s holds no member: %w", dataDir, err)
	}
	clientURL, err := loopbackURL()
	if err != nil {
		return err
	}
	peerURL, err := loopbackURL()
	if err != nil {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dataDir
	cfg.Name = name
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = name + "=" + peerURL.String()
	cfg.ForceNewCluster = true
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("starting etcd with force-new-cluster on %s: %w", dataDir, err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd with force-new-cluster on %s: %w", dataDir, err)
	case <-ctx.Done():
		return fmt.Errorf("waiting for etcd with force-new-cluster on %s: %w", dataDir, ctx.Err())
	case <-time.After(2 * time.Minute):
		return errors.New("etcd with force-new-cluster did not become ready within 2m")
	}
}

// loopbackURL is an http URL on a free loopback port.
func loopbackURL() (url.URL, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	addr := ln.Addr().String()
	ln.Close()
	return url.URL{Scheme: "http", Host: addr}, nil
}
