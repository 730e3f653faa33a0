package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/pki"
)

// buildTags are the Makefile's: the same tags (and -trimpath) hit the warm
// build cache instead of compiling Kubernetes again.
const buildTags = "providerless,netgo,osusergo,sqlite_omit_load_extension"

// baselineParts are the separate binaries of the usual installation, in
// start order.
var baselineParts = []struct{ name, pkg string }{
	{"etcd", "./bench/baseline/etcd"},
	{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"},
	{"kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"},
	{"kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"},
}

// baseline is the set of built binaries, by part name.
type baseline struct {
	kubeVersion string
	bins        map[string]string
}

// buildBaseline builds each part once into a directory named after the
// Kubernetes and Go versions, and reuses what is there. One build at a
// time: linking Kubernetes takes gigabytes and both cores.
func buildBaseline(ctx context.Context, root, cacheDir string) (*baseline, error) {
	kubeVersion, err := output(ctx, root, "go", "list", "-m", "-f", "{{.Version}}", "k8s.io/kubernetes")
	if err != nil {
		return nil, err
	}
	goVersion, err := output(ctx, root, "go", "env", "GOVERSION")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cacheDir, "baseline-"+kubeVersion+"-"+goVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b := &baseline{kubeVersion: kubeVersion, bins: map[string]string{}}
	for _, part := range baselineParts {
		bin := filepath.Join(dir, part.name)
		b.bins[part.name] = bin
		if _, err := os.Stat(bin); err == nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "building %s into %s (once)\n", part.name, dir)
		// Built under a temporary name: an interrupted build leaves
		// nothing that looks finished.
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", buildTags,
			"-ldflags", "-s -w "+versionVars(kubeVersion), "-o", bin+".tmp", part.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building %s: %w", part.name, err)
		}
		if err := os.Rename(bin+".tmp", bin); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// versionVars make the baseline report the same Kubernetes version as skiff
// does (the Makefile sets the same variables); they only touch the link.
func versionVars(kubeVersion string) string {
	major, minor, _ := strings.Cut(strings.TrimPrefix(kubeVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	var vars []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		vars = append(vars, "-X "+pkg+".gitVersion="+kubeVersion, "-X "+pkg+".gitMajor="+major, "-X "+pkg+".gitMinor="+minor)
	}
	return strings.Join(vars, " ")
}

func output(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// baselinePlan writes the PKI, kubeconfigs and authentication config with
// skiff's own code, and returns the plan whose command lines skiff would
// use, so both sides run with the same security settings. The differences
// are those of the usual installation: etcd over HTTP on loopback instead of
// kine on a socket, and each component's own port instead of skiff's
// supervisor in front of the apiserver.
func baselinePlan(dataDir string, etcdURL string, apiPort, cmPort, schedPort int) (controlplane.Plan, error) {
	cfg := &config.Server{}
	cfg.AddFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError)) // sets skiff's defaults
	cfg.DataDir = dataDir
	cfg.KubeAPIServerArgs = []string{"secure-port=" + strconv.Itoa(apiPort)}
	cfg.KubeControllerManagerArgs = []string{"secure-port=" + strconv.Itoa(cmPort)}
	cfg.KubeSchedulerArgs = []string{"secure-port=" + strconv.Itoa(schedPort)}

	advertiseIP, err := controlplane.DetectAdvertiseIP(cfg)
	if err != nil {
		return controlplane.Plan{}, err
	}
	plan := controlplane.Plan{
		Config:      cfg,
		Layout:      controlplane.Layout{DataDir: dataDir},
		AdvertiseIP: advertiseIP,
		EtcdServers: []string{etcdURL},
		LeaderElect: false, // as skiff on SQLite: one server, nothing to elect
	}
	hostDNS, hostIPs, err := pki.HostSANs()
	if err != nil {
		return plan, err
	}
	res, err := controlplane.EnsureCertificates(plan.Layout, controlplane.CertInputs{
		ClusterDomain: cfg.ClusterDomain,
		ServiceCIDR:   cfg.ServiceCIDR,
		AdvertiseIP:   advertiseIP,
		TLSSANs:       cfg.TLSSANs,
		HostDNS:       hostDNS,
		HostIPs:       hostIPs,
	}, time.Now())
	if err != nil {
		return plan, err
	}
	if err := controlplane.WriteComponentKubeconfigs(plan.Layout, plan.LoopbackURL(), res.ServerCAPEM); err != nil {
		return plan, err
	}
	return plan, controlplane.WriteAPIServerConfigs(plan.Layout)
}

// runBaseline starts the four processes the way a careful init system
// would: etcd; kube-apiserver once etcd is healthy; controller-manager and
// scheduler once the apiserver is ready (skiff starts them at that point
// too, so neither side's apiserver shares the CPU with them while starting).
// The clock starts at etcd's exec; the PKI is written before, as an
// installer would, and its time is reported apart.
func runBaseline(ctx context.Context, b *baseline, settle time.Duration) (s sample, err error) {
	dir, err := os.MkdirTemp("", "skiff-bench-baseline-")
	if err != nil {
		return s, err
	}
	defer os.RemoveAll(dir)
	ports, err := freePorts(5)
	if err != nil {
		return s, err
	}
	etcdClient, etcdPeer, apiPort, cmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)

	pkiBegin := time.Now()
	plan, err := baselinePlan(filepath.Join(dir, "data"), etcdURL, apiPort, cmPort, schedPort)
	if err != nil {
		return s, fmt.Errorf("writing the baseline's PKI: %w", err)
	}
	s.pki = time.Since(pkiBegin)

	var procs []*proc
	defer func() { stopAll(procs) }()
	start := func(name string, args ...string) error {
		p, err := startProc(dir, name, b.bins[name], args...)
		if err == nil {
			procs = append(procs, p)
		}
		return err
	}

	begin := time.Now()
	if err := start("etcd",
		"--name=default",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--log-level=warn"); err != nil {
		return s, err
	}
	if err := waitOK(ctx, etcdURL+"/health", "", procs); err != nil {
		return s, err
	}
	s.etcd = time.Since(begin)
	if err := start("kube-apiserver", plan.APIServerArgs()...); err != nil {
		return s, err
	}
	caFile := plan.Layout.ServerCA().Cert
	if err := waitOK(ctx, plan.LoopbackURL()+"/readyz", caFile, procs); err != nil {
		return s, err
	}
	s.ready = time.Since(begin)
	if err := start("kube-controller-manager", plan.ControllerManagerArgs()...); err != nil {
		return s, err
	}
	if err := start("kube-scheduler", plan.SchedulerArgs()...); err != nil {
		return s, err
	}
	if err := waitHealthy(ctx, cmPort, schedPort, procs); err != nil {
		return s, err
	}
	s.full = time.Since(begin)
	return s, settleAndMeasure(ctx, &s, settle, procs)
}
