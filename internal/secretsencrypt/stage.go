package secretsencrypt

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/controlplane"
)

// Stage is where a key rotation is, with K3s's names.
type Stage string

// The rotation stages. A cluster is at Start until its first rotation; a
// classic rotation goes Prepare (a new key, not primary), Rotate (the new
// key primary), then ReencryptRequest, ReencryptActive (every Secret
// rewritten) and ReencryptFinished (old keys dropped). rotate-keys goes
// from Start or ReencryptFinished straight to ReencryptRequest.
const (
	StageStart             Stage = "start"
	StagePrepare           Stage = "prepare"
	StageRotate            Stage = "rotate"
	StageReencryptRequest  Stage = "reencrypt_request"
	StageReencryptActive   Stage = "reencrypt_active"
	StageReencryptFinished Stage = "reencrypt_finished"
)

// State is the rotation's recorded state, kept beside the key file.
type State struct {
	Stage Stage `json:"stage"`
	// Prepared names the key prepare added, which rotate makes primary.
	Prepared string `json:"prepared,omitempty"`
	// Keep is reencrypt's --skip: keep the old keys when it is done.
	Keep bool `json:"keep,omitempty"`
	// Error is why the last reencrypt stopped, "" when it did not fail.
	Error string `json:"error,omitempty"`
}

// StatePath is where the state is recorded: in the cred dir, with the keys.
func StatePath(l controlplane.Layout) string {
	return filepath.Join(l.CredDir(), "encryption-state.json")
}

// ReadState reads l's rotation state; Start when none is recorded.
func ReadState(l controlplane.Layout) (State, error) {
	b, err := os.ReadFile(StatePath(l))
	if errors.Is(err, fs.ErrNotExist) {
		return State{Stage: StageStart}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("secrets encryption: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil || s.Stage == "" {
		return State{}, fmt.Errorf("secrets encryption: %s is not a rotation state: %v", StatePath(l), err)
	}
	return s, nil
}

// WriteState records s, atomically, mode 0600.
func WriteState(l controlplane.Layout, s State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(StatePath(l), append(b, '\n'), 0o600, 0o700); err != nil {
		return fmt.Errorf("secrets encryption: writing %s: %w", StatePath(l), err)
	}
	return nil
}

// Operation names, as `skiff secrets-encrypt` takes them.
const (
	OpEnable     = "enable"
	OpDisable    = "disable"
	OpPrepare    = "prepare"
	OpRotate     = "rotate"
	OpReencrypt  = "reencrypt"
	OpRotateKeys = "rotate-keys"
)

// Ops are the operations that change keys or state, in the order a
// rotation uses them.
var Ops = []string{OpEnable, OpDisable, OpPrepare, OpRotate, OpReencrypt, OpRotateKeys}

func (s Stage) idle() bool { return s == StageStart || s == StageReencryptFinished }
func (s Stage) reencrypting() bool {
	return s == StageReencryptRequest || s == StageReencryptActive
}

// Check refuses op at stage s with keys k, with the reason and what to
// run instead. A refused operation changes nothing.
func Check(op string, s Stage, k Keys) error {
	if s.reencrypting() {
		return fmt.Errorf("a reencrypt is running (stage %s): wait until skiff secrets-encrypt status says reencrypt_finished", s)
	}
	switch op {
	case OpEnable, OpDisable:
		if !s.idle() {
			return fmt.Errorf("a key rotation is unfinished (stage %s): finish it first", s)
		}
	case OpPrepare, OpRotateKeys:
		if !k.Enabled() {
			return errors.New("secrets encryption is disabled: run skiff secrets-encrypt enable first")
		}
		switch s {
		case StagePrepare:
			return errors.New("a key is prepared already (stage prepare): run skiff secrets-encrypt rotate, then reencrypt")
		case StageRotate:
			return errors.New("the previous rotation is unfinished (stage rotate): run skiff secrets-encrypt reencrypt first")
		}
	case OpRotate:
		switch s {
		case StagePrepare:
		case StageRotate:
			return errors.New("the previous rotation is unfinished (stage rotate): run skiff secrets-encrypt reencrypt first")
		default:
			return fmt.Errorf("no key is prepared (stage %s): run skiff secrets-encrypt prepare first, or rotate-keys", s)
		}
	case OpReencrypt:
		if s == StagePrepare {
			return errors.New("the prepared key is not primary yet (stage prepare): run skiff secrets-encrypt rotate first")
		}
	default:
		return fmt.Errorf("unknown operation %q; want one of %v", op, Ops)
	}
	return nil
}

// Apply is op's change to the keys and the state, after Check: typ is the
// type of a new key (--secrets-encryption-provider). reencrypt only moves
// the state to ReencryptRequest; the rewrite and Finish follow.
func Apply(op string, s State, k Keys, typ string, now time.Time) (State, Keys, error) {
	if err := Check(op, s.Stage, k); err != nil {
		return s, k, err
	}
	k = slices.Clone(k)
	switch op {
	case OpEnable, OpDisable:
		i := slices.IndexFunc(k, func(x Key) bool { return x.Type == Identity })
		if i < 0 {
			k = append(k, Key{Type: Identity})
			i = len(k) - 1
		}
		id := k[i]
		k = slices.Delete(k, i, i+1)
		if op == OpDisable {
			k = slices.Insert(k, 0, id)
		} else {
			if len(k) == 0 {
				nk, err := NewKey(typ, k, now)
				if err != nil {
					return s, nil, err
				}
				k = append(k, nk)
			}
			k = append(k, id)
		}
	case OpPrepare:
		nk, err := NewKey(typ, k, now)
		if err != nil {
			return s, nil, err
		}
		k = slices.Insert(k, 1, nk)
		s = State{Stage: StagePrepare, Prepared: nk.Name}
	case OpRotate:
		i := k.Find(s.Prepared)
		if i < 0 {
			return s, nil, fmt.Errorf("the prepared key %q is not in the key list any more: run skiff secrets-encrypt prepare again", s.Prepared)
		}
		nk := k[i]
		k = slices.Insert(slices.Delete(k, i, i+1), 0, nk)
		s = State{Stage: StageRotate}
	case OpRotateKeys:
		nk, err := NewKey(typ, k, now)
		if err != nil {
			return s, nil, err
		}
		k = slices.Insert(k, 0, nk)
		s = State{Stage: StageReencryptRequest}
	case OpReencrypt:
		s = State{Stage: StageReencryptRequest}
	}
	return s, k, nil
}

// Finish is the key list once every Secret is written with k's primary:
// the other cipher keys are dropped (identity stays, so a Secret written
// without encryption is still read). With encryption disabled, or with
// keep, nothing is dropped: enable puts the keys back to use.
func Finish(k Keys, keep bool) Keys {
	if keep || !k.Enabled() {
		return k
	}
	out := Keys{k[0]}
	for _, x := range k[1:] {
		if x.Type == Identity {
			out = append(out, x)
		}
	}
	return out
}
