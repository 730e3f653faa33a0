package secretsencrypt

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/datastore"
)

// Status counts every Secret the datastore stores (kine on SQLite, as a
// server runs it), reading them in pages: more Secrets than a page, and
// keys around the prefix that are not Secrets.
func TestStatusCountsStoredSecretsInPages(t *testing.T) {
	logrus.SetOutput(io.Discard)
	// Short: kine's unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "skse-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	k := datastore.New(datastore.Config{DataDir: dir}, slog.New(slog.DiscardHandler))
	if err := k.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Stop() })
	cli, err := k.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	n := 2*statusPageSize + 7
	for i := range n {
		v := "k8s:enc:aescbc:v1:new:\x01"
		if i%3 == 0 {
			v = "k8s:enc:aescbc:v1:old:\x01"
		}
		if _, err := cli.Put(t.Context(), fmt.Sprintf("/registry/secrets/ns%d/s%03d", i%4, i), v); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"/registry/secret", "/registry/secretsx/a", "/registry/services/x"} {
		if _, err := cli.Put(t.Context(), key, "k8s:enc:aescbc:v1:old:\x01"); err != nil {
			t.Fatal(err)
		}
	}

	l := controlplane.Layout{DataDir: t.TempDir()}
	c := New(Config{Layout: l, Datastore: k.Client}, slog.New(slog.DiscardHandler))
	got, err := c.countStored(t.Context(), Key{Type: AESCBC, Name: "new"})
	if err != nil {
		t.Fatal(err)
	}
	old := (n + 2) / 3
	if got.Total != n || got.WithPrimary != n-old || got.ByKey["aescbc:old"] != old {
		t.Errorf("counted %+v, want %d Secrets, %d with the old key", got, n, old)
	}
}
