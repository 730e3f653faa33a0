package server

import (
	"log/slog"

	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/datastore"
	"github.com/skiffkube/skiff/internal/token"
	"github.com/skiffkube/skiff/internal/tokenrotate"
)

// externalDatastore reports a datastore several servers share through
// kine or an external etcd, where the bootstrap data lives sealed.
func externalDatastore(cfg *config.Server, kind string) bool {
	return cfg.DatastoreEndpoint != "" && kind != "sqlite"
}

// settleGivenToken decides, before anything is written, what start-up does
// with --token (given; nil without one):
//
//   - a token that `skiff token rotate` replaced on this server: the
//     stored token wins (nil is returned) and a warning says to update
//     --token;
//   - on an external datastore, a token other than the stored one is left
//     to the bootstrap phase: it must open the cluster's bootstrap data
//     (the token was rotated on another server), else it is refused there;
//   - otherwise controlplane.CheckToken's rule.
func settleGivenToken(cfg *config.Server, l controlplane.Layout, kind string, given *token.Token, log *slog.Logger) (*token.Token, error) {
	if given == nil {
		return nil, nil
	}
	retired, err := controlplane.IsRetiredToken(l, given.Secret)
	if err != nil {
		return nil, err
	}
	if retired {
		log.Warn("--token (or --token-file) is a token that `skiff token rotate` replaced: starting with the current one in <data-dir>/server/token; update --token to it",
			"component", "token", "file", l.TokenFile())
		return nil, nil
	}
	if externalDatastore(cfg, kind) {
		return given, controlplane.CheckTokenPin(l, given)
	}
	return given, controlplane.CheckToken(l, given)
}

// tokenRotateHandler serves `skiff token rotate`; on an external datastore
// it reseals the bootstrap data there.
func tokenRotateHandler(cfg *config.Server, l controlplane.Layout, kind string, embedded bool, ds *datastore.Kine, log *slog.Logger) *tokenrotate.Handler {
	h := &tokenrotate.Handler{Layout: l, Log: log}
	if !embedded && externalDatastore(cfg, kind) {
		h.Datastore = func() (bootstrap.KV, func(), error) {
			c, err := ds.Client()
			if err != nil {
				return nil, nil, err
			}
			return bootstrap.EtcdKV(c), func() { _ = c.Close() }, nil
		}
	}
	return h
}
