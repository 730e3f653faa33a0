package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/noderun"
	"github.com/skiffkube/skiff/internal/pki"
	"github.com/skiffkube/skiff/internal/token"
)

// certificates is the start-up phase that settles the PKI, the cluster token
// and the files the components read. It has no long-running work.
type certificates struct {
	layout      controlplane.Layout
	loopbackURL string
	cfg         *config.Server
	advertiseIP net.IP
	given       *token.Token
	// node, when set, gets its certificates and kubeconfigs here too.
	node *noderun.Plan
	log  *slog.Logger
	// serverCAPEM is the server CA as written, for the admin kubeconfig.
	serverCAPEM []byte
}

func (c *certificates) Name() string               { return "certificates" }
func (c *certificates) Init(context.Context) error { return nil }
func (c *certificates) Stop() error                { return nil }

func (c *certificates) Ready() error {
	if c.serverCAPEM == nil {
		return fmt.Errorf("certificates not written")
	}
	return nil
}

func (c *certificates) Start(context.Context) error {
	hostDNS, hostIPs, err := pki.HostSANs()
	if err != nil {
		return fmt.Errorf("listing host addresses: %w", err)
	}
	// The agent token, kept for the servers that join later. A joining
	// server with another one than the cluster's was refused before.
	agentToken, err := bootstrap.ReadAgentToken(c.cfg.AgentToken, c.cfg.AgentTokenFile)
	if err != nil {
		return err
	}
	changed, err := bootstrap.WriteAgentToken(c.layout, agentToken)
	if err != nil {
		return err
	}
	if changed {
		c.log.Info("agent token changed: agents join with the new one; servers that joined before keep the one they were given", "component", "certificates")
	}
	res, err := controlplane.EnsureCertificates(c.layout, controlplane.CertInputs{
		ClusterDomain: c.cfg.ClusterDomain,
		ServiceCIDR:   c.cfg.ServiceCIDR,
		AdvertiseIP:   c.advertiseIP,
		BindIP:        net.ParseIP(c.cfg.BindAddress),
		TLSSANs:       c.cfg.TLSSANs,
		HostDNS:       hostDNS,
		HostIPs:       hostIPs,
	}, time.Now())
	if err != nil {
		return err
	}
	// On the first start every file is new: one line says so. Later, each
	// certificate re-issued (expiring, new SANs, removed) is a line with why.
	firstRun := slices.ContainsFunc(res.Issued, func(s string) bool { return strings.HasSuffix(s, ": new CA") })
	if firstRun {
		c.log.Info("created the cluster CAs and certificates", "component", "certificates", "dir", c.layout.TLSDir(), "files", len(res.Issued))
	}
	c.logIssued(res.Issued, firstRun)
	if _, err := controlplane.EnsureToken(c.layout, c.given, res.ServerCAPEM); err != nil {
		return err
	}
	if err := controlplane.WriteComponentKubeconfigs(c.layout, c.loopbackURL, res.ServerCAPEM); err != nil {
		return err
	}
	if err := controlplane.WriteAPIServerConfigs(c.layout); err != nil {
		return fmt.Errorf("writing the apiserver's config files: %w", err)
	}
	if c.node != nil {
		issued, err := nodeCertificates(c.node, c.layout, supervisorLocalURL(c.cfg))
		if err != nil {
			return fmt.Errorf("node certificates: %w", err)
		}
		c.logIssued(issued, firstRun)
	}
	c.serverCAPEM = res.ServerCAPEM
	return nil
}

// logIssued logs each certificate (re)issued, given as "file: reason": at
// Info with the reason, or at Debug on the first start, when all are new.
func (c *certificates) logIssued(issued []string, firstRun bool) {
	for _, what := range issued {
		file, reason, _ := strings.Cut(what, ": ")
		if firstRun {
			c.log.Debug("certificate issued", "component", "certificates", "file", file, "reason", reason)
			continue
		}
		c.log.Info("certificate re-issued", "component", "certificates", "file", file, "reason", reason)
	}
}
