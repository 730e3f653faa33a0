// Package secretsencrypt is skiff's encryption of Secrets at rest: it
// writes the apiserver's EncryptionConfiguration (the apiserver itself
// encrypts, and reloads the file when it changes) and drives K3s's key
// rotation stages (prepare, rotate, reencrypt) behind `skiff
// secrets-encrypt`.
//
// The configuration is held as an ordered list of keys: the first is the
// primary, which the apiserver writes with; the others only read. The
// identity "key" (plain text) is one of them: first when encryption is
// disabled, last when enabled, so Secrets stored before encryption was
// turned on stay readable.
package secretsencrypt

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"

	"github.com/skiffkube/skiff/internal/atomicfile"
	"github.com/skiffkube/skiff/internal/controlplane"
)

// Key types, as the EncryptionConfiguration names its providers.
const (
	AESCBC    = "aescbc"
	Secretbox = "secretbox"
	Identity  = "identity"
)

// Key is one entry of the key list: a provider type and, for a cipher, the
// key's name and base64 secret (32 random bytes: AES-256, or secretbox's
// key size).
type Key struct {
	Type   string `json:"type"`
	Name   string `json:"name,omitempty"`
	Secret string `json:"-"`
}

// Keys is the ordered key list; Keys[0] is the primary.
type Keys []Key

// Enabled reports whether the primary key encrypts (is not identity).
func (k Keys) Enabled() bool { return len(k) > 0 && k[0].Type != Identity }

// Primary is the key new writes use.
func (k Keys) Primary() Key {
	if len(k) == 0 {
		return Key{Type: Identity}
	}
	return k[0]
}

// Find is the index of the cipher key named name, -1 if none.
func (k Keys) Find(name string) int {
	return slices.IndexFunc(k, func(x Key) bool { return x.Type != Identity && x.Name == name })
}

// NewKey makes a key of type typ (aescbc or secretbox) with 32 random bytes,
// named "<typ>key" (the first key, as K3s names it) or, when that name is
// taken in existing, "<typ>key-<UTC time>".
func NewKey(typ string, existing Keys, now time.Time) (Key, error) {
	if typ != AESCBC && typ != Secretbox {
		return Key{}, fmt.Errorf("secrets encryption: unknown provider %q; want aescbc or secretbox", typ)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return Key{}, fmt.Errorf("secrets encryption: generating a key: %w", err)
	}
	name := typ + "key"
	if existing.Find(name) >= 0 {
		base := name + "-" + now.UTC().Format("20060102T150405Z")
		name = base
		for i := 2; existing.Find(name) >= 0; i++ {
			name = fmt.Sprintf("%s-%d", base, i)
		}
	}
	return Key{Type: typ, Name: name, Secret: base64.StdEncoding.EncodeToString(secret)}, nil
}

// Initial is the key list of a server started with --secrets-encryption: a
// new key of typ, primary, and identity to read what was stored before.
func Initial(typ string, now time.Time) (Keys, error) {
	k, err := NewKey(typ, nil, now)
	if err != nil {
		return nil, err
	}
	return Keys{k, {Type: Identity}}, nil
}

// Configuration is k as the apiserver's EncryptionConfiguration for
// Secrets: consecutive keys of one type make one provider, in order.
func (k Keys) Configuration() *apiserverv1.EncryptionConfiguration {
	var providers []apiserverv1.ProviderConfiguration
	for i := 0; i < len(k); {
		j := i + 1
		for j < len(k) && k[j].Type == k[i].Type && k[i].Type != Identity {
			j++
		}
		var keys []apiserverv1.Key
		for _, x := range k[i:j] {
			keys = append(keys, apiserverv1.Key{Name: x.Name, Secret: x.Secret})
		}
		var p apiserverv1.ProviderConfiguration
		switch k[i].Type {
		case AESCBC:
			p.AESCBC = &apiserverv1.AESConfiguration{Keys: keys}
		case Secretbox:
			p.Secretbox = &apiserverv1.SecretboxConfiguration{Keys: keys}
		default:
			p.Identity = &apiserverv1.IdentityConfiguration{}
		}
		providers = append(providers, p)
		i = j
	}
	c := &apiserverv1.EncryptionConfiguration{
		Resources: []apiserverv1.ResourceConfiguration{{Resources: []string{"secrets"}, Providers: providers}},
	}
	c.Kind = "EncryptionConfiguration"
	c.APIVersion = apiserverv1.SchemeGroupVersion.String()
	return c
}

// FromConfiguration flattens the Secrets providers of c into a key list.
// It refuses a configuration skiff did not write: another resource, a
// provider other than aescbc, secretbox and identity.
func FromConfiguration(c *apiserverv1.EncryptionConfiguration) (Keys, error) {
	if len(c.Resources) != 1 || !slices.Equal(c.Resources[0].Resources, []string{"secrets"}) {
		return nil, errors.New("it does not configure exactly the resource secrets, as skiff writes it")
	}
	var k Keys
	for _, p := range c.Resources[0].Providers {
		switch {
		case p.AESCBC != nil:
			for _, x := range p.AESCBC.Keys {
				k = append(k, Key{Type: AESCBC, Name: x.Name, Secret: x.Secret})
			}
		case p.Secretbox != nil:
			for _, x := range p.Secretbox.Keys {
				k = append(k, Key{Type: Secretbox, Name: x.Name, Secret: x.Secret})
			}
		case p.Identity != nil:
			k = append(k, Key{Type: Identity})
		default:
			return nil, errors.New("it has a provider other than aescbc, secretbox and identity, which skiff does not manage")
		}
	}
	if len(k) == 0 {
		return nil, errors.New("it has no provider")
	}
	return k, nil
}

// Marshal is k's configuration file content (JSON, as K3s writes it).
func (k Keys) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(k.Configuration(), "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Read loads the key list from l's encryption config file; the error wraps
// fs.ErrNotExist when there is none, and names the file otherwise.
func Read(l controlplane.Layout) (Keys, error) {
	path := l.EncryptionConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets encryption: %w", err)
	}
	var c apiserverv1.EncryptionConfiguration
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("secrets encryption: %s: %w", path, err)
	}
	k, err := FromConfiguration(&c)
	if err != nil {
		return nil, fmt.Errorf("secrets encryption: %s: %w", path, err)
	}
	return k, nil
}

// Write stores k in l's encryption config file, atomically, mode 0600 (it
// holds the keys).
func Write(l controlplane.Layout, k Keys) error {
	b, err := k.Marshal()
	if err != nil {
		return fmt.Errorf("secrets encryption: %w", err)
	}
	if err := atomicfile.Write(l.EncryptionConfig(), b, 0o600, 0o700); err != nil {
		return fmt.Errorf("secrets encryption: writing %s: %w", l.EncryptionConfig(), err)
	}
	return nil
}

// Exists reports whether l has an encryption config file.
func Exists(l controlplane.Layout) bool {
	_, err := os.Stat(l.EncryptionConfig())
	return err == nil
}

// Ensure writes a new key list of type typ when l has no encryption config
// yet; it reports whether it wrote one. An existing file is kept whatever
// its keys: they are the ones the datastore's Secrets are encrypted with.
func Ensure(l controlplane.Layout, typ string, now time.Time) (bool, error) {
	if _, err := os.Stat(l.EncryptionConfig()); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("secrets encryption: %w", err)
	}
	k, err := Initial(typ, now)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(l.EncryptionConfig()), 0o700); err != nil {
		return false, fmt.Errorf("secrets encryption: %w", err)
	}
	if err := Write(l, k); err != nil {
		return false, err
	}
	return true, nil
}
