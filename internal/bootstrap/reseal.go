package bootstrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/token"
)

// ErrNoBootstrapData is Reseal's error when the datastore holds no
// bootstrap data at StorageKey.
var ErrNoBootstrapData = errors.New("the datastore holds no bootstrap data at " + StorageKey)

// ResealResult says what Reseal did.
type ResealResult struct {
	// AlreadyRotated is true when the data was sealed with the new token
	// already (another server of the cluster rotated it): nothing changed.
	AlreadyRotated bool
}

// Reseal changes the token an external datastore's bootstrap data is
// sealed with, for `skiff token rotate`: it opens the data at StorageKey
// with oldSecret, replaces the server token file in it with newToken (full
// form), seals it with newToken's secret and stores it in one transaction
// that succeeds only if the key is unchanged since it was read (it reads
// again and retries when another server wrote in between). Data that
// opens with newToken's secret already is left as it is (AlreadyRotated).
// Data that opens with neither is refused with ErrOtherCluster; no data
// with ErrNoBootstrapData. A failed exchange is a *DatastoreError, after
// which the data is the old one, or the new one when only the reply of
// the write was lost: a retry then finds it AlreadyRotated.
func Reseal(ctx context.Context, kv KV, l controlplane.Layout, oldSecret string, newToken token.Token) (ResealResult, error) {
	if oldSecret == "" || newToken.Secret == "" {
		return ResealResult{}, errors.New("bootstrap: resealing needs the old and the new token")
	}
	tokenRel := relTo(l, l.TokenFile())
	for attempt := 0; attempt < 5; attempt++ {
		entries, err := kv.List(ctx, StoragePrefix)
		if err != nil {
			return ResealResult{}, &DatastoreError{Op: "listing " + StoragePrefix, Err: err}
		}
		e, ok := find(entries, StorageKey)
		if !ok {
			return ResealResult{}, ErrNoBootstrapData
		}
		d, err := Open(e.Value, oldSecret)
		if errors.Is(err, ErrWrongToken) {
			if _, err := Open(e.Value, newToken.Secret); err == nil {
				return ResealResult{AlreadyRotated: true}, nil
			}
			return ResealResult{}, fmt.Errorf("%w (it opens with neither the current nor the new token)", ErrOtherCluster)
		}
		if err != nil {
			return ResealResult{}, err
		}
		d.Files[tokenRel] = []byte(newToken.String() + "\n")
		if err := d.Check(l); err != nil {
			return ResealResult{}, fmt.Errorf("the datastore's bootstrap data is not whole: %w", err)
		}
		blob, err := Seal(d, newToken.Secret)
		if err != nil {
			return ResealResult{}, err
		}
		replaced, err := kv.Replace(ctx, StorageKey, blob, e.ModRevision)
		if err != nil {
			return ResealResult{}, &DatastoreError{Op: "storing " + StorageKey, Err: err}
		}
		if replaced {
			return ResealResult{}, nil
		}
	}
	return ResealResult{}, &DatastoreError{Op: "storing " + StorageKey, Err: errors.New("the key kept changing while it was resealed")}
}
