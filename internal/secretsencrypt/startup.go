package secretsencrypt

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/skiffkube/skiff/internal/controlplane"
)

// Startup is the start-up step that settles the encryption config before
// the apiserver starts (it runs with the certificates, after a joining
// server has written the cluster's bootstrap data): a cluster's first
// server started with --secrets-encryption makes the key; a server must
// not run with a config the rest of the cluster lacks, nor without one
// the cluster has.
type Startup struct {
	Layout controlplane.Layout
	// Enable is --secrets-encryption; Provider the type of its key.
	Enable   bool
	Provider string
	// First is true when this server starts the cluster's keys: SQLite,
	// a new embedded etcd cluster. A server taking the cluster's
	// bootstrap data gets them from it.
	First bool
	// Configured is whether the apiserver is given the config file.
	Configured bool
	// Members, when set, counts the servers of the cluster (embedded
	// etcd's members): a key made by one server of several would be that
	// server's alone.
	Members func(context.Context) (int, error)
	Log     *slog.Logger
}

func (s *Startup) Name() string               { return "secrets-encryption" }
func (s *Startup) Init(context.Context) error { return nil }
func (s *Startup) Ready() error               { return nil }
func (s *Startup) Stop() error                { return nil }

// Start writes the first key or refuses a mismatch, naming the flag.
func (s *Startup) Start(ctx context.Context) error {
	log := s.Log.With("component", "secrets-encrypt")
	if s.Enable && s.First && !Exists(s.Layout) && s.Members != nil {
		n, err := s.Members(ctx)
		if err != nil {
			return fmt.Errorf("secrets encryption: counting the cluster's servers: %w", err)
		}
		if n > 1 {
			return fmt.Errorf("--secrets-encryption: this cluster of %d servers was started without it, and a key made now would be this server's alone; "+
				"secrets encryption is chosen when a cluster's first server starts", n)
		}
	}
	if s.Enable && s.First {
		wrote, err := Ensure(s.Layout, s.Provider, time.Now())
		if err != nil {
			return err
		}
		if wrote {
			log.Info("generated the secrets encryption key", "provider", s.Provider, "file", s.Layout.EncryptionConfig())
		}
	}
	exists := Exists(s.Layout)
	switch {
	case s.Configured && !exists:
		return fmt.Errorf("--secrets-encryption: the cluster was started without it (its bootstrap data has no %s); "+
			"secrets encryption is chosen when a cluster's first server starts", s.Layout.EncryptionConfig())
	case !s.Configured && exists:
		return fmt.Errorf("the cluster encrypts Secrets at rest (%s came with its bootstrap data): start this server with --secrets-encryption", s.Layout.EncryptionConfig())
	case s.Configured && !s.Enable:
		log.Info("Secrets stay encrypted with the existing keys though --secrets-encryption is not set; skiff secrets-encrypt disable turns encryption off", "file", s.Layout.EncryptionConfig())
	}
	return nil
}
