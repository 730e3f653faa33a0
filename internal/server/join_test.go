package server

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/token"
)

// Agents do not join with a server token the cluster rotated away from
// while this server could not follow (replaced); the agent token still
// joins, and the server token again once it is no longer replaced.
func TestAgentJoinRefusesAReplacedServerToken(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	server := token.Token{CAHash: token.HashCA([]byte("ca")), Username: "server", Secret: "old-server-secret"}
	if err := controlplane.WriteToken(l, server); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Server{AgentToken: "agent-secret"}
	replaced := ""
	js := newJoinServer(cfg, l, func(s string) bool { return s == replaced }, slog.New(slog.DiscardHandler))
	if got := js.Secrets(); !slices.Equal(got, []string{"old-server-secret", "agent-secret"}) {
		t.Fatalf("join secrets %q, want the server's and the agent token's", got)
	}
	replaced = server.Secret
	if got := js.Secrets(); !slices.Equal(got, []string{"agent-secret"}) {
		t.Fatalf("join secrets with the server token replaced: %q, want the agent token's only", got)
	}
}
