package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/datastore"
	"github.com/skiffkube/skiff/internal/secretsencrypt"
	"github.com/skiffkube/skiff/internal/token"
)

// externalBootstrap is the start-up phase of a server on an external
// datastore (PostgreSQL, MySQL, etcd) that several servers share: between
// the datastore and the certificates, it stores this server's bootstrap
// data in the datastore (the first server) or takes the cluster's from it
// (every other one), sealed with the token (package bootstrap). SQLite has
// one server: no phase.
type externalBootstrap struct {
	cfg         *config.Server
	layout      controlplane.Layout
	given       *token.Token
	advertiseIP net.IP
	ds          *datastore.Kine
	log         *slog.Logger
	done        bool
}

// externalBootstrapPhases is the phase for kind (config.DatastoreKind), none
// for SQLite.
func externalBootstrapPhases(cfg *config.Server, l controlplane.Layout, kind string, given *token.Token, advertiseIP net.IP, ds *datastore.Kine, log *slog.Logger) []component.Phase {
	if kind == "sqlite" {
		return nil
	}
	return []component.Phase{{Name: "bootstrap", Components: []component.Component{&externalBootstrap{
		cfg: cfg, layout: l, given: given, advertiseIP: advertiseIP, ds: ds, log: log.With("component", "bootstrap"),
	}}}}
}

func (b *externalBootstrap) Name() string               { return "bootstrap" }
func (b *externalBootstrap) Init(context.Context) error { return nil }
func (b *externalBootstrap) Stop() error                { return nil }

func (b *externalBootstrap) Ready() error {
	if !b.done {
		return errors.New("bootstrap data not settled")
	}
	return nil
}

// attemptTimeout bounds one exchange with the datastore.
const attemptTimeout = 15 * time.Second

// Start settles the bootstrap data, retrying while the datastore does not
// answer (one warning per attempt); a refusal ends the start-up.
func (b *externalBootstrap) Start(ctx context.Context) error {
	secret, err := b.secret()
	if err != nil {
		return err
	}
	sync := bootstrap.Sync{
		Layout:   b.layout,
		Settings: settingsOf(b.cfg),
		Secret:   secret,
		Prepare:  b.prepare,
		Accept:   b.accept,
	}
	client, err := b.ds.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	endpoint := config.RedactURL(b.cfg.DatastoreEndpoint)
	caughtUp := ""
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		res, err := sync.Run(actx, bootstrap.EtcdKV(client))
		cancel()
		if sync.Secret == "" {
			// A first server's generated token: a retry must find what
			// it may have stored with it.
			sync.Secret = res.Secret
		}
		var dsErr *bootstrap.DatastoreError
		switch {
		case err == nil:
			if caughtUp != "" {
				if err := b.tookRotatedToken(caughtUp, sync.Secret); err != nil {
					return err
				}
			}
			if res.Created {
				b.log.Info("stored the cluster's bootstrap data in the datastore, sealed with the token", "endpoint", endpoint)
			} else {
				b.log.Info("took the cluster's bootstrap data from the datastore", "endpoint", endpoint)
			}
			b.done = true
			return nil
		case errors.As(err, &dsErr) && ctx.Err() == nil:
			wait := min(time.Duration(attempt)*time.Second, 5*time.Second)
			b.log.Warn(fmt.Sprintf("datastore not answering, retrying in %s", wait), "endpoint", endpoint, "attempt", attempt, "error", err.Error())
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		case errors.Is(err, bootstrap.ErrOtherCluster) && caughtUp == "" && ctx.Err() == nil:
			// The token may have been rotated while this server was down:
			// the rotation record gives the new one for the old.
			next, ok := rotatedToken(ctx, client, b.layout, sync.Secret)
			if !ok {
				return fmt.Errorf("%w (datastore %s)", err, endpoint)
			}
			caughtUp, sync.Secret = sync.Secret, next.Secret
		default:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w (datastore %s)", err, endpoint)
		}
	}
}

// secret is the token's secret: --token's, else the data dir's token's,
// else "" (a first server generates one).
func (b *externalBootstrap) secret() (string, error) {
	if b.given != nil {
		return b.given.Secret, nil
	}
	data, err := os.ReadFile(b.layout.TokenFile())
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading stored token: %w", err)
	}
	t, err := token.Parse(string(data))
	if err != nil {
		return "", fmt.Errorf("stored token %s: %w", b.layout.TokenFile(), err)
	}
	return t.Secret, nil
}

// prepare makes a first server's bootstrap data in staging: the data dir's
// bootstrap files, then the CAs, service-account key and token (with
// secret, or a new one when it is "") created where missing, exactly as the
// certificates phase would (the leaves made along are dropped with the
// staging dir).
func (b *externalBootstrap) prepare(staging controlplane.Layout, secret string) (*bootstrap.Data, string, error) {
	own, err := bootstrap.Collect(b.layout, settingsOf(b.cfg))
	if err != nil {
		return nil, "", err
	}
	for rel, content := range own.Files {
		p := filepath.Join(staging.DataDir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, "", fmt.Errorf("bootstrap: %w", err)
		}
		if err := os.WriteFile(p, content, 0o600); err != nil {
			return nil, "", fmt.Errorf("bootstrap: %w", err)
		}
	}
	res, err := controlplane.EnsureCertificates(staging, controlplane.CertInputs{
		ClusterDomain: b.cfg.ClusterDomain,
		ServiceCIDR:   b.cfg.ServiceCIDR,
		AdvertiseIP:   b.advertiseIP,
	}, time.Now())
	if err != nil {
		return nil, "", err
	}
	given := b.given
	if given == nil && secret != "" {
		// The data dir's token, or the one generated by an earlier attempt.
		given = &token.Token{Secret: secret}
	}
	tok, err := controlplane.EnsureToken(staging, given, res.ServerCAPEM)
	if err != nil {
		return nil, "", err
	}
	if b.cfg.SecretsEncryption {
		// The cluster's key is made by its first server, with its data.
		if _, err := secretsencrypt.Ensure(staging, b.cfg.SecretsEncryptionProvider, time.Now()); err != nil {
			return nil, "", err
		}
	}
	agentToken, err := bootstrap.ReadAgentToken(b.cfg.AgentToken, b.cfg.AgentTokenFile)
	if err != nil {
		return nil, "", err
	}
	if _, err := bootstrap.WriteAgentToken(staging, agentToken); err != nil {
		return nil, "", err
	}
	d, err := bootstrap.Collect(staging, settingsOf(b.cfg))
	if err != nil {
		return nil, "", err
	}
	return d, tok.Secret, nil
}

// accept refuses a cluster whose server CA a full --token does not pin, or
// whose agent token is not --agent-token.
func (b *externalBootstrap) accept(d *bootstrap.Data) error {
	agentToken, err := bootstrap.ReadAgentToken(b.cfg.AgentToken, b.cfg.AgentTokenFile)
	if err != nil {
		return err
	}
	if err := d.CheckAgentToken(b.layout, agentToken); err != nil {
		return err
	}
	if b.given == nil || b.given.IsShort() {
		return nil
	}
	rel, _ := filepath.Rel(b.layout.DataDir, b.layout.ServerCA().Cert)
	if err := b.given.VerifyCA(d.Files[filepath.ToSlash(rel)]); err != nil {
		return fmt.Errorf("--token does not belong to the cluster in the datastore: %w", err)
	}
	return nil
}

// settingsOf are the cluster-wide settings of cfg.
func settingsOf(cfg *config.Server) bootstrap.Settings {
	return bootstrap.Settings{
		ClusterCIDR:   cfg.ClusterCIDR,
		ServiceCIDR:   cfg.ServiceCIDR,
		ClusterDNS:    cfg.ClusterDNS,
		ClusterDomain: cfg.ClusterDomain,
		// The apiservers of one cluster must agree on it (K3s's critical
		// setting too).
		ServiceNodePortRange: cfg.ServiceNodePortRange,
	}
}
