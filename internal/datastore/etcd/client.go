package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/controlplane"
)

// Ports of embedded etcd, as in K3s and upstream's defaults.
const (
	ClientPort  = 2379
	PeerPort    = 2380
	MetricsPort = 2381
)

// LocalClientURL is where this server's own etcd member answers clients:
// the apiserver, snapshots, the member-removal controller.
var LocalClientURL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ClientPort))

// TLSFiles are the files an etcd client presents and trusts: the etcd
// server CA and a client certificate it signed. All paths are absolute.
type TLSFiles struct {
	CAFile, CertFile, KeyFile string
}

// ClientTLSFiles are the client credentials in l's data dir: the etcd
// server CA (server/tls/etcd/server-ca.crt) and the client certificate
// server/tls/etcd/client.{crt,key}, which the apiserver uses too. They exist
// once the server has started with embedded etcd.
func ClientTLSFiles(l controlplane.Layout) TLSFiles {
	return TLSFiles{CAFile: l.EtcdServerCA().Cert, CertFile: clientPair(l).Cert, KeyFile: clientPair(l).Key}
}

// TLSConfig loads the files into a client TLS config. Errors name the file.
func (f TLSFiles) TLSConfig() (*tls.Config, error) {
	tc, err := transport.TLSInfo{CertFile: f.CertFile, KeyFile: f.KeyFile, TrustedCAFile: f.CAFile}.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client credentials (%s, %s, %s): %w", f.CAFile, f.CertFile, f.KeyFile, err)
	}
	return tc, nil
}

// ClientConfig is a clientv3 configuration that reaches the embedded etcd
// member of the server whose data dir l is: endpoint https://127.0.0.1:2379,
// TLS with ClientTLSFiles. It fails when the credentials are missing (the
// data dir never ran embedded etcd). Use endpoints of other members by
// replacing Endpoints; the credentials work for every member.
func ClientConfig(l controlplane.Layout) (clientv3.Config, error) {
	tc, err := ClientTLSFiles(l).TLSConfig()
	if err != nil {
		return clientv3.Config{}, err
	}
	return clientv3.Config{
		Endpoints:   []string{LocalClientURL},
		TLS:         tc,
		DialTimeout: 5 * time.Second,
		// The client's own zap logger is silenced: errors reach callers.
		Logger: quietLogger(),
	}, nil
}

// VoterClientURLs lists the client URLs of the started, voting members of
// the cluster the member in l's data dir belongs to (asked of that member,
// within 10 s). It fails when none is started and voting.
func VoterClientURLs(ctx context.Context, l controlplane.Layout) ([]string, error) {
	cc, err := ClientConfig(l)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cc.Context = ctx
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range list.Members {
		if !m.IsLearner && m.Name != "" {
			out = append(out, m.ClientURLs...)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no started voting member")
	}
	return out, nil
}
