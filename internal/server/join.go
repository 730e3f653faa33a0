package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/bootstraptoken"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/join"
	"github.com/skiffkube/skiff/internal/pki"
	"github.com/skiffkube/skiff/internal/token"
)

// newJoinServer serves agents joining this server. Everything it needs is read at
// request time: the supervisor starts before the certificates phase writes them.
// The server token does not join while replaced reports it (the cluster
// rotated it and this server has not taken the new one; nil: never).
func newJoinServer(cfg *config.Server, l controlplane.Layout, replaced func(secret string) bool, log *slog.Logger) *join.Server {
	var (
		mu     sync.Mutex
		client kubernetes.Interface
	)
	clientFor := func() (kubernetes.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		if client != nil {
			return client, nil
		}
		rc, err := clientcmd.BuildConfigFromFlags("", l.AdminKubeconfig())
		if err != nil {
			return nil, fmt.Errorf("loading %s: %w", l.AdminKubeconfig(), err)
		}
		c, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, err
		}
		client = c
		return client, nil
	}
	return &join.Server{
		Bootstrap: func(ctx context.Context, given string) bool {
			c, err := clientFor()
			return err == nil && bootstraptoken.Valid(ctx, c, given, time.Now())
		},
		Secrets: func() []string {
			var secrets []string
			if data, err := os.ReadFile(l.TokenFile()); err == nil {
				if t, err := token.Parse(string(data)); err == nil && (replaced == nil || !replaced(t.Secret)) {
					secrets = append(secrets, t.Secret)
				}
			}
			// The agent token lets agents join and nothing else. The flag is
			// this server's truth, and a token file is read per request, so it
			// can be rotated without a restart; without either, the cluster's
			// agent token, which the server that started it shares with every
			// server (one joined without the flag).
			agent := cfg.AgentToken
			switch {
			case cfg.AgentTokenFile != "":
				data, err := os.ReadFile(cfg.AgentTokenFile)
				if err != nil {
					log.Warn("cannot read agent-token-file", "component", "join", "file", cfg.AgentTokenFile, "err", err)
				}
				agent = string(data)
			case agent == "":
				if data, err := os.ReadFile(l.AgentTokenFile()); err == nil {
					agent = string(data)
				}
			}
			if t, err := token.Parse(agent); err == nil {
				secrets = append(secrets, t.Secret)
			}
			return secrets
		},
		CAs: func() (*pki.CA, *pki.CA, error) {
			clientCA, _, err := pki.LoadOrCreateCA(l.ClientCA().Cert, l.ClientCA().Key, "skiff-client-ca")
			if err != nil {
				return nil, nil, err
			}
			serverCA, _, err := pki.LoadOrCreateCA(l.ServerCA().Cert, l.ServerCA().Key, "skiff-server-ca")
			return clientCA, serverCA, err
		},
		Client:  clientFor,
		Cluster: clusterConfig(cfg),
		TLSSANs: cfg.TLSSANs,
		Log:     log,
	}
}
