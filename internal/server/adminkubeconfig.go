package server

import (
	"bytes"
	"log/slog"
	"os"
	"sync"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
)

// adminKubeconfig writes --write-kubeconfig at start and again only when the
// admin certificate it embeds changed since (renewed here, or replaced by
// `skiff certificate rotate`): rewriting it on every renewal pass would
// revert a user's edits to the file (a context name, a server address).
type adminKubeconfig struct {
	cfg   *config.Server
	l     controlplane.Layout
	caPEM func() []byte
	log   *slog.Logger

	mu   sync.Mutex
	last []byte // the admin certificate at the last write
}

// write writes the file; with onlyIfChanged, only when the admin
// certificate differs from the one last written.
func (a *adminKubeconfig) write(onlyIfChanged bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cert, err := os.ReadFile(a.l.ClientAdmin().Cert)
	if err == nil && onlyIfChanged && bytes.Equal(cert, a.last) {
		return nil
	}
	if err := writeAdminKubeconfig(a.cfg, a.l, a.caPEM(), a.log); err != nil {
		return err
	}
	a.last = cert
	return nil
}
