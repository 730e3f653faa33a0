package secretsencrypt

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/skiffkube/skiff/internal/controlplane"
)

func TestStartup(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	one := func(context.Context) (int, error) { return 1, nil }
	three := func(context.Context) (int, error) { return 3, nil }

	// A first server makes the key, once.
	l := controlplane.Layout{DataDir: t.TempDir()}
	s := &Startup{Layout: l, Enable: true, Provider: AESCBC, First: true, Configured: true, Members: one, Log: quiet}
	if err := s.Start(ctx); err != nil || !Exists(l) {
		t.Fatalf("first server: %v, exists %v", err, Exists(l))
	}
	// Without the flag afterwards the key stays in use.
	s.Enable = false
	if err := s.Start(ctx); err != nil {
		t.Errorf("restart without the flag: %v", err)
	}

	for _, tc := range []struct {
		name string
		s    Startup
		file bool
		want string
	}{
		{"one server of several", Startup{Enable: true, First: true, Configured: true, Members: three}, false, "this cluster of 3 servers was started without it"},
		{"a joiner on a cluster without a key", Startup{Enable: true, Configured: true}, false, "--secrets-encryption: the cluster was started without it"},
		{"a joiner without the flag on a cluster with a key", Startup{Configured: false}, true, "start this server with --secrets-encryption"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := controlplane.Layout{DataDir: t.TempDir()}
			if tc.file {
				if _, err := Ensure(l, AESCBC, now); err != nil {
					t.Fatal(err)
				}
			}
			s := tc.s
			s.Layout, s.Provider, s.Log = l, AESCBC, quiet
			err := s.Start(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
			if Exists(l) != tc.file {
				t.Error("a refused start changed the key file")
			}
		})
	}
}
