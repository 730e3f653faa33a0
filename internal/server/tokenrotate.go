package server

import (
	"context"
	"fmt"
	"log/slog"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/component"
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

// tokenRotation serves `skiff token rotate` and, where several servers
// share the datastore (embedded etcd, or an external one), follows a
// rotation done on another server: the route's handler and the follower
// component (none on SQLite).
func tokenRotation(cfg *config.Server, l controlplane.Layout, kind string, embedded bool, ds *datastore.Kine, log *slog.Logger) (*tokenrotate.Handler, []component.Component) {
	h := &tokenrotate.Handler{Layout: l, Log: log}
	switch {
	case embedded:
		h.Datastore = func() (*clientv3.Client, error) { return embeddedEtcdClient(l) }
	case externalDatastore(cfg, kind):
		h.Datastore = ds.Client
		h.Sealed = true
	default:
		return h, nil
	}
	return h, []component.Component{&tokenrotate.Follower{Handler: h}}
}

// rotatedToken is the token that replaced previous, from the datastore's
// rotation record: how a server on an external datastore that was down
// during `skiff token rotate` opens the re-sealed bootstrap data. Only for
// a server of the cluster (previous is its stored token): a new server
// given the old token is refused.
func rotatedToken(ctx context.Context, c *clientv3.Client, l controlplane.Layout, previous string) (token.Token, bool) {
	stored, err := controlplane.StoredToken(l)
	if previous == "" || err != nil || stored == nil || stored.Secret != previous {
		return token.Token{}, false
	}
	resp, err := c.Get(ctx, tokenrotate.RecordKey)
	if err != nil || len(resp.Kvs) != 1 {
		return token.Token{}, false
	}
	next, err := tokenrotate.TokenFromRecord(l, resp.Kvs[0].Value, previous)
	return next, err == nil
}

// tookRotatedToken follows up a start on a token rotated while this server
// was down: the bootstrap data (written by now) holds the new token; the
// previous one is retired, and a --token that still says it is replaced
// for the rest of start-up, with a warning.
func (b *externalBootstrap) tookRotatedToken(previous, next string) error {
	if err := controlplane.RetireToken(b.layout, previous); err != nil {
		return err
	}
	stored, err := controlplane.StoredToken(b.layout)
	if err != nil || stored == nil || stored.Secret != next {
		return fmt.Errorf("bootstrap: the datastore's bootstrap data does not hold the rotated token")
	}
	if b.given != nil {
		*b.given = *stored
	}
	b.log.Warn("the server token was rotated while this server was down: took the new one from the datastore; update --token to the one in <data-dir>/server/token", "file", b.layout.TokenFile())
	return nil
}
