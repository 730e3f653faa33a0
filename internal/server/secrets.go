package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/controlplane/args"
	"github.com/skiffkube/skiff/internal/datastore"
	"github.com/skiffkube/skiff/internal/datastore/etcd"
	"github.com/skiffkube/skiff/internal/secretsencrypt"
)

// secretsEncryption are the parts of Secrets encryption at rest: the
// start-up step that settles the key file before the apiserver, and the
// controller behind `skiff secrets-encrypt` (served on the supervisor). The
// apiserver gets the file (plan.EncryptSecrets) when --secrets-encryption
// asks for it or the data dir has one: Secrets encrypted with its keys must
// stay readable whatever the flags.
func secretsEncryption(cfg *config.Server, l controlplane.Layout, p *datastorePlan, ds *datastore.Kine, configured bool, log *slog.Logger) (*secretsencrypt.Startup, *secretsencrypt.Controller) {
	startup := &secretsencrypt.Startup{
		Layout:     l,
		Enable:     cfg.SecretsEncryption,
		Provider:   cfg.SecretsEncryptionProvider,
		First:      p.kind == "sqlite" || (p.embedded && p.join == nil && cfg.Server == ""),
		Configured: configured,
		Log:        log,
	}
	// The cluster's servers are embedded etcd's members, learners and
	// members down included: each holds a copy of the key file.
	var members func(context.Context) (int, error)
	if p.embedded {
		members = func(ctx context.Context) (int, error) { return etcdMembers(ctx, l) }
		startup.Members = members
	}
	refuse := ""
	if !p.embedded && p.kind != "sqlite" {
		refuse = fmt.Sprintf("this server's bootstrap data, with the keys, is stored in its %s datastore, which a key change here would not update: changing keys on an external datastore is not supported yet", p.kind)
	}
	prefix, _ := args.Value(cfg.KubeAPIServerArgs, "etcd-prefix")
	ctl := secretsencrypt.New(secretsencrypt.Config{
		Layout:        l,
		Provider:      cfg.SecretsEncryptionProvider,
		Configured:    configured,
		Refuse:        refuse,
		Kubeconfig:    l.AdminKubeconfig(),
		StoragePrefix: prefix,
		Servers:       members,
		Datastore: func() (*clientv3.Client, error) {
			if !p.embedded {
				return ds.Client()
			}
			return embeddedEtcdClient(l)
		},
	}, log)
	return startup, ctl
}

// etcdMembers counts embedded etcd's members from its member list: every
// member, voter or learner, started or not, up or down.
func etcdMembers(ctx context.Context, l controlplane.Layout) (int, error) {
	cc, err := etcd.ClientConfig(l)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cc.Context = ctx
	cli, err := clientv3.New(cc)
	if err != nil {
		return 0, fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return 0, fmt.Errorf("etcd member list: %w", err)
	}
	return len(list.Members), nil
}
