package tokenrotate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/token"
)

// RecordKey is where a rotation leaves the new token for the cluster's
// other servers, in the datastore they share.
//
// The record holds the new token twice, sealed (package bootstrap) with
// the token it replaced and with itself: a server still on the replaced
// token opens the first and takes the new one; a server on the new one
// opens the second and knows it is current. Who can read the datastore and
// knows the replaced token learns the new one; the same reader could have
// opened the bootstrap data (CA keys included) with the replaced token
// before the rotation, so the record reveals nothing new to them.
const RecordKey = "/skiff/token-rotation"

type record struct {
	FromPrevious []byte `json:"fromPrevious"`
	Current      []byte `json:"current"`
}

// shareRotation, before this server takes next: reseals the bootstrap data
// (external datastore), then leaves the record for the other servers
// unless the one there is for next already.
//
// The two writes cannot be one transaction (kine serves only single-key
// ones), so the record is written even when the data was resealed already:
// a rotation whose record write failed, or that crashed between the two,
// leaves the record when it is retried.
func (h *Handler) shareRotation(ctx context.Context, current, next token.Token) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := h.Datastore()
	if err != nil {
		return fmt.Errorf("token: datastore: %w", err)
	}
	defer c.Close()
	if h.Sealed {
		res, err := bootstrap.Reseal(ctx, bootstrap.EtcdKV(c), h.Layout, current.Secret, next)
		if err != nil {
			return fmt.Errorf("token: resealing the bootstrap data: %w", err)
		}
		if !res.AlreadyRotated && h.Log != nil {
			h.Log.Info("resealed the bootstrap data in the datastore with the new token", "component", "token")
		}
	}
	resp, err := c.Get(ctx, RecordKey)
	if err != nil {
		return fmt.Errorf("token: reading %s: %w", RecordKey, err)
	}
	if len(resp.Kvs) == 1 {
		var rec record
		if json.Unmarshal(resp.Kvs[0].Value, &rec) == nil {
			if _, err := bootstrap.Open(rec.Current, next.Secret); err == nil {
				return nil
			}
		}
	}
	d := &bootstrap.Data{Files: map[string][]byte{tokenRel(h.Layout): []byte(next.String() + "\n")}}
	var rec record
	if rec.FromPrevious, err = bootstrap.Seal(d, current.Secret); err != nil {
		return err
	}
	if rec.Current, err = bootstrap.Seal(d, next.Secret); err != nil {
		return err
	}
	blob, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	if _, err := c.Put(ctx, RecordKey, string(blob)); err != nil {
		return fmt.Errorf("token: storing %s: %w", RecordKey, err)
	}
	return nil
}

func tokenRel(l controlplane.Layout) string {
	r, _ := filepath.Rel(l.DataDir, l.TokenFile())
	return filepath.ToSlash(r)
}

// ErrBehind is Follow's error when the cluster's token was rotated more
// than once since this server's: it cannot learn the current one.
var ErrBehind = errors.New("the cluster's server token was rotated more than once since this server's: give this server the current one with `skiff token rotate --token <this server's> --new-token <the cluster's>`")

// Follow applies a rotation record (RecordKey's value) to this server's
// data dir: when it replaces the stored token, the new token is stored and
// the old one retired, and changed is true. A record for the stored token
// changes nothing; one this server cannot open is ErrBehind. When the
// record is not for the stored token and Follow fails, the stored token is
// Replaced until this server has the new one.
func (h *Handler) Follow(value []byte) (changed bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	stored, err := controlplane.StoredToken(h.Layout)
	if err != nil || stored == nil {
		return false, fmt.Errorf("token: no stored token: %w", err)
	}
	changed, err = h.follow(value, stored)
	if err != nil {
		h.setReplaced(stored.Secret)
	} else {
		h.setReplaced("")
	}
	return changed, err
}

func (h *Handler) follow(value []byte, stored *token.Token) (bool, error) {
	var rec record
	if err := json.Unmarshal(value, &rec); err != nil {
		return false, fmt.Errorf("token: malformed %s: %w", RecordKey, err)
	}
	if _, err := bootstrap.Open(rec.Current, stored.Secret); err == nil {
		return false, nil
	}
	next, err := nextToken(h.Layout, rec, stored.Secret)
	if err != nil {
		return false, err
	}
	caPEM, err := os.ReadFile(h.Layout.ServerCA().Cert)
	if err != nil {
		return false, fmt.Errorf("token: reading server CA: %w", err)
	}
	if err := next.VerifyCA(caPEM); err != nil {
		return false, fmt.Errorf("token: the rotation record's token: %w", err)
	}
	if err := controlplane.RetireToken(h.Layout, stored.Secret); err != nil {
		return false, fmt.Errorf("token: %w", err)
	}
	if err := controlplane.WriteToken(h.Layout, next); err != nil {
		return false, fmt.Errorf("token: %w", err)
	}
	return true, nil
}

// TokenFromRecord is the token a rotation record (RecordKey's value)
// replaced previous with; ErrBehind when the record is not for previous.
func TokenFromRecord(l controlplane.Layout, value []byte, previous string) (token.Token, error) {
	var rec record
	if err := json.Unmarshal(value, &rec); err != nil {
		return token.Token{}, fmt.Errorf("token: malformed %s: %w", RecordKey, err)
	}
	return nextToken(l, rec, previous)
}

func nextToken(l controlplane.Layout, rec record, previous string) (token.Token, error) {
	d, err := bootstrap.Open(rec.FromPrevious, previous)
	if errors.Is(err, bootstrap.ErrWrongToken) {
		return token.Token{}, ErrBehind
	}
	if err != nil {
		return token.Token{}, err
	}
	next, err := token.Parse(string(d.Files[tokenRel(l)]))
	if err != nil {
		return token.Token{}, fmt.Errorf("token: the rotation record's token: %w", err)
	}
	return next, nil
}

// Follower is the server component that takes a rotation done on another
// server of the cluster: it watches RecordKey in the shared datastore and
// applies each record (Handler.Follow), so that every server refuses the
// old token soon after the rotation, without a restart.
type Follower struct {
	Handler *Handler
	component.Runner
	seen int64
}

func (f *Follower) Name() string               { return "token-follower" }
func (f *Follower) Init(context.Context) error { return nil }
func (f *Follower) Ready() error               { return nil }
func (f *Follower) Stop() error                { return f.Runner.Stop(5 * time.Second) }

// Start watches until Stop; a lost connection is retried.
func (f *Follower) Start(context.Context) error {
	f.Go(func(ctx context.Context) error {
		for {
			err := f.watch(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if f.Handler.Log != nil {
				f.Handler.Log.Debug("token rotation watch ended, retrying", "component", "token", "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(5 * time.Second):
			}
		}
	})
	return nil
}

func (f *Follower) watch(ctx context.Context) error {
	c, err := f.Handler.Datastore()
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.Get(ctx, RecordKey)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 1 {
		f.apply(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	}
	for wr := range c.Watch(ctx, RecordKey, clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				f.apply(ev.Kv.Value, ev.Kv.ModRevision)
			}
		}
	}
	return errors.New("watch closed")
}

// apply follows one revision of the record, once.
func (f *Follower) apply(value []byte, rev int64) {
	if rev == f.seen {
		return
	}
	f.seen = rev
	changed, err := f.Handler.Follow(value)
	log := f.Handler.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch {
	case err != nil && f.Handler.replaced.Load() != nil:
		log.Error("the cluster's server token was rotated and this server cannot take the new one: it refuses joins with its old token "+
			"until you run `skiff token rotate --token <this server's token> --new-token <the cluster's token>` on it", "component", "token", "err", err)
	case err != nil:
		log.Warn("cannot take the cluster's new server token", "component", "token", "err", err)
	case changed:
		log.Info("took the server token rotated on another server: the old token no longer joins nodes here", "component", "token")
	}
}
