// Package killall stops everything a skiff node runs and undoes its host
// changes (mounts, links, firewall rules, runtime state) while keeping the
// cluster's data, so `skiff server` can start again from where it was.
//
// It is the equivalent of K3s's k3s-killall.sh: removing the data dir is
// uninstall's job, not this one's.
//
// Every step is best effort: a node being cleaned up is often half broken, so
// a failing step is reported and the later steps still run.
package killall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Defaults for the fields of Options left empty.
const (
	DefaultRunDir     = "/run/skiff"
	DefaultKubeletDir = "/var/lib/kubelet"
	DefaultProcRoot   = "/proc"
	// DefaultDataDir must match the default of `skiff server --data-dir`: a
	// server started without the flag is recognised as using it.
	DefaultDataDir = "/var/lib/skiff"
)

// Host paths that are not ours to choose: CNI plugins and flannel hard-code
// them.
const (
	netnsDir      = "/run/netns"
	cniStateDir   = "/var/lib/cni"
	flannelRunDir = "/run/flannel"
	stopGrace     = 5 * time.Second
	stopPoll      = 100 * time.Millisecond
	killRounds    = 3
	componentName = "killall"
)

// Options say which node to clean up. Only DataDir is required.
type Options struct {
	// DataDir is the server's --data-dir. It is kept; it is only used to
	// recognise our processes and mounts.
	DataDir string
	// RunDir is skiff's runtime state (containerd state, flannel subnet
	// file); it is unmounted and removed. Default DefaultRunDir.
	RunDir string
	// KubeletDir is the kubelet's root. Mounts under its pods/ and plugins/
	// are undone. Default DefaultKubeletDir.
	KubeletDir string
	// Log receives one info line a step. Default: discard.
	Log *slog.Logger
	// Exec runs ip, iptables-save/-restore and nft. Default OSExec.
	Exec Exec
	// ProcRoot is where procfs is mounted. Default DefaultProcRoot.
	ProcRoot string
}

// Report counts what Run undid.
type Report struct {
	ProcessesKilled  int
	MountsUnmounted  int
	NetnsRemoved     int
	LinksDeleted     int
	RulesRemoved     int // iptables and ip6tables rules
	ChainsRemoved    int // iptables and ip6tables chains
	NftTablesDeleted int
	DirsRemoved      int
	// DirsEmptied are state dirs that are mount points: emptied, kept.
	DirsEmptied int
}

// String is the one-line summary `skiff killall` prints.
func (r Report) String() string {
	emptied := ""
	if r.DirsEmptied > 0 {
		emptied = fmt.Sprintf(", emptied %d (mount points)", r.DirsEmptied)
	}
	return fmt.Sprintf("killed %d processes, unmounted %d mounts, deleted %d links, removed %d firewall rules (%d chains, %d nftables tables), removed %d state dirs%s",
		r.ProcessesKilled, r.MountsUnmounted, r.LinksDeleted, r.RulesRemoved, r.ChainsRemoved, r.NftTablesDeleted, r.DirsRemoved, emptied)
}

// Run stops skiff's processes and undoes its host state, in the order that
// lets each step succeed: processes first (they hold mounts and links busy),
// then mounts, links, firewall rules and finally state directories.
//
// Run keeps going when a step fails and returns every failure joined, with
// the report of what was done.
func Run(ctx context.Context, o Options) (Report, error) {
	exe, err := os.Executable()
	if err != nil {
		// Only used to recognise a `skiff server` started without --data-dir.
		exe = ""
	}
	r, err := newRunner(o, hostSystem{}, os.Getpid(), exe)
	if err != nil {
		return Report{}, err
	}
	return r.run(ctx)
}

// runner carries one run's settings. The host's own paths (netnsDir,
// stateDirs) are fields so that tests can point them into a temporary dir.
type runner struct {
	dataDir, runDir, kubeletDir string
	procRoot                    string
	log                         *slog.Logger
	exec                        Exec
	sys                         system
	self                        int
	selfExe                     string
	netnsDir                    string
	stateDirs                   []string
	grace, poll                 time.Duration
}

func newRunner(o Options, sys system, self int, selfExe string) (*runner, error) {
	if o.RunDir == "" {
		o.RunDir = DefaultRunDir
	}
	if o.KubeletDir == "" {
		o.KubeletDir = DefaultKubeletDir
	}
	if o.ProcRoot == "" {
		o.ProcRoot = DefaultProcRoot
	}
	if o.Exec == nil {
		o.Exec = OSExec{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	// These directories are unmounted or removed recursively, so an empty or
	// root path would be a disaster rather than a typo.
	for _, f := range []struct{ name, path string }{
		{"data dir", o.DataDir}, {"run dir", o.RunDir}, {"kubelet dir", o.KubeletDir}, {"proc root", o.ProcRoot},
	} {
		if f.path == "" {
			return nil, fmt.Errorf("killall: %s must be set", f.name)
		}
		if !filepath.IsAbs(f.path) || filepath.Clean(f.path) == "/" {
			return nil, fmt.Errorf("killall: %s must be an absolute path other than /, got %q", f.name, f.path)
		}
	}
	runDir := filepath.Clean(o.RunDir)
	return &runner{
		dataDir:    filepath.Clean(o.DataDir),
		runDir:     runDir,
		kubeletDir: filepath.Clean(o.KubeletDir),
		procRoot:   filepath.Clean(o.ProcRoot),
		log:        o.Log.With("component", componentName),
		exec:       o.Exec,
		sys:        sys,
		self:       self,
		selfExe:    selfExe,
		netnsDir:   netnsDir,
		stateDirs:  []string{cniStateDir, runDir, flannelRunDir},
		grace:      stopGrace,
		poll:       stopPoll,
	}, nil
}

func (r *runner) run(ctx context.Context) (Report, error) {
	var rep Report
	var errs []error
	steps := []struct {
		name string
		fn   func(context.Context, *Report) error
	}{
		{"stopping processes", r.stopProcesses},
		{"unmounting", r.unmount},
		{"deleting network links", r.deleteLinks},
		{"removing firewall rules", r.removeFirewallRules},
		{"removing state dirs", r.removeStateDirs},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
			break
		}
		if err := s.fn(ctx, &rep); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
	}
	return rep, errors.Join(errs...)
}

// aliases returns p and, when it differs, p with symlinks resolved: the
// kernel reports real paths in /proc/<pid>/exe and mountinfo, while the user
// may name a symlink (a data dir moved to a bigger disk, say).
func aliases(p string) []string {
	out := []string{p}
	if real, err := filepath.EvalSymlinks(p); err == nil && real != p {
		out = append(out, real)
	}
	return out
}

// under reports whether p is dir or inside it, by path and not by string
// prefix: /var/lib/skiff2 is not under /var/lib/skiff.
func under(p, dir string) bool {
	if p == dir {
		return true
	}
	if dir == "/" {
		return len(p) > 0 && p[0] == '/'
	}
	return len(p) > len(dir) && p[:len(dir)] == dir && p[len(dir)] == '/'
}
