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
	"slices"
	"time"
)

// Defaults for the fields of Options left empty.
const (
	DefaultRunDir     = "/run/skiff"
	DefaultKubeletDir = "/var/lib/kubelet"
	DefaultProcRoot   = "/proc"
	// DefaultDataDir must match the default of `skiff server --data-dir`:
	// the data dir of a server started without the flag.
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

// Options say where the node's state is. All are optional: killall finds
// skiff's processes by what they are, whatever data dir they use.
type Options struct {
	// DataDir is a data dir whose containerd mounts (under
	// <DataDir>/agent/containerd) are undone, besides those of the data
	// dirs the running processes and the node record name. It is kept.
	DataDir string
	// RunDir is skiff's runtime state (containerd state, flannel subnet
	// file, the node record); it is unmounted and removed. Default
	// DefaultRunDir.
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
	ProcessesKilled int
	MountsUnmounted int
	NetnsRemoved    int
	LinksDeleted    int
	// RoutesDeleted are skiff's service-CIDR routes (route protocol
	// host.ServiceRouteProtocol).
	RoutesDeleted    int
	RulesRemoved     int // iptables and ip6tables rules, and nftables rules of shared tables
	ChainsRemoved    int // iptables and ip6tables chains
	NftTablesDeleted int
	DirsRemoved      int
	// NodesElsewhere counts skiff node processes in other mount and
	// network namespaces, left alone.
	NodesElsewhere int
	// DirsEmptied are state dirs that are mount points: emptied, kept.
	DirsEmptied int
	// DirsInUseElsewhere are state dirs kept because a skiff node in other
	// namespaces uses the same directory (it shares the host's /run or
	// /var/lib/cni).
	DirsInUseElsewhere int
}

// String is the one-line summary `skiff killall` prints.
func (r Report) String() string {
	emptied := ""
	if r.DirsEmptied > 0 {
		emptied = fmt.Sprintf(", emptied %d (mount points)", r.DirsEmptied)
	}
	elsewhere := ""
	if r.NodesElsewhere > 0 {
		elsewhere = fmt.Sprintf("; left %d processes of skiff nodes in other namespaces alone", r.NodesElsewhere)
	}
	if r.DirsInUseElsewhere > 0 {
		elsewhere += fmt.Sprintf("; kept %d state dirs those nodes use", r.DirsInUseElsewhere)
	}
	return fmt.Sprintf("killed %d processes, unmounted %d mounts, deleted %d links and %d routes, removed %d firewall rules (%d chains, %d nftables tables), removed %d state dirs%s%s",
		r.ProcessesKilled, r.MountsUnmounted, r.LinksDeleted, r.RoutesDeleted, r.RulesRemoved, r.ChainsRemoved, r.NftTablesDeleted, r.DirsRemoved, emptied, elsewhere)
}

// Run stops skiff's processes and undoes its host state, in the order that
// lets each step succeed: processes first (they hold mounts and links busy),
// then mounts, links (and skiff's service routes), firewall rules and
// finally state directories. From
// after the processes stopped to the end it holds the node lock (LockNode),
// so a node (re)started meanwhile (systemd's Restart=always) is refused
// rather than losing its network; when the lock is already held, a node
// started after the processes stopped runs and Run removes nothing.
//
// What it stops and what it removes are one set: every skiff node in
// killall's mount or network namespace, whatever its data dir (a node in
// other namespaces keeps its processes, and its mounts, links and rules are
// out of killall's sight). When a node process survives SIGKILL, Run
// removes nothing and says which process runs.
//
// Run keeps going when a later step fails and returns every failure
// joined, with the report of what was done.
func Run(ctx context.Context, o Options) (Report, error) {
	exe, err := os.Executable()
	if err != nil {
		// Only used to recognise skiff installed under another name.
		exe = ""
	}
	r, err := newRunner(o, hostSystem{}, os.Getpid(), exe)
	if err != nil {
		return Report{}, err
	}
	return r.run(ctx)
}

// runner carries one run's settings. The host's own paths (netnsDir,
// cniDir, stateDirs) are fields so that tests can point them into a temporary dir.
type runner struct {
	dataDir, runDir, kubeletDir string
	procRoot                    string
	// foundDataDirs are the data dirs the stopped processes named.
	foundDataDirs []string
	// lock is the node lock, held from after the processes stopped to the
	// end of the run (lockNode).
	lock *os.File
	// madeRunDir says lockNode created the run dir to hold the lock.
	madeRunDir bool
	// elsewhere are the skiff node processes in other namespaces that
	// stopProcesses left alone.
	elsewhere []Proc
	// rec is the node record, read once (recordRead).
	rec               NodeRecord
	recOK, recordRead bool
	log               *slog.Logger
	exec              Exec
	sys               system
	self              int
	selfExe           string
	netnsDir          string
	cniDir            string
	stateDirs         []string
	grace, poll       time.Duration
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
		if f.path == "" && f.name == "data dir" {
			continue
		}
		if !filepath.IsAbs(f.path) || filepath.Clean(f.path) == "/" {
			return nil, fmt.Errorf("killall: %s must be an absolute path other than /, got %q", f.name, f.path)
		}
	}
	runDir := filepath.Clean(o.RunDir)
	dataDir := ""
	if o.DataDir != "" {
		dataDir = filepath.Clean(o.DataDir)
	}
	return &runner{
		dataDir:    dataDir,
		runDir:     runDir,
		kubeletDir: filepath.Clean(o.KubeletDir),
		procRoot:   filepath.Clean(o.ProcRoot),
		log:        o.Log.With("component", componentName),
		exec:       o.Exec,
		sys:        sys,
		self:       self,
		selfExe:    selfExe,
		netnsDir:   netnsDir,
		cniDir:     cniStateDir,
		stateDirs:  []string{cniStateDir, runDir, flannelRunDir},
		grace:      stopGrace,
		poll:       stopPoll,
	}, nil
}

func (r *runner) run(ctx context.Context) (Report, error) {
	defer func() {
		if r.lock != nil {
			r.lock.Close()
			r.lock = nil
		}
	}()
	var rep Report
	var errs []error
	steps := []struct {
		name string
		fn   func(context.Context, *Report) error
	}{
		{"stopping processes", r.stopProcesses},
		{"locking the node", r.lockNode},
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
			if errors.Is(err, errNodeRunning) {
				// Dismantling around a running node would leave it
				// without its network and mounts.
				break
			}
		}
	}
	return rep, errors.Join(errs...)
}

// record reads the node record in the run dir; a broken one is logged and
// ignored, since killall must work on a broken node.
// It is read once: the last step removes it.
func (r *runner) record() (NodeRecord, bool) {
	if !r.recordRead {
		rec, ok, err := ReadNodeRecord(r.runDir)
		if err != nil {
			r.log.Warn("ignoring the node record", "err", err)
		}
		r.rec, r.recOK, r.recordRead = rec, ok, true
	}
	return r.rec, r.recOK
}

// knownDataDirs are the data dirs whose containerd mounts are ours: the one
// given, the recorded one and those the stopped processes named.
func (r *runner) knownDataDirs() []string {
	var dirs []string
	add := func(d string) {
		if d != "" && !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	add(r.dataDir)
	if rec, ok := r.record(); ok && rec.DataDir != "" {
		add(filepath.Clean(rec.DataDir))
	}
	for _, d := range r.foundDataDirs {
		add(d)
	}
	return dirs
}

func (r *runner) addDataDirs(dirs []string) {
	for _, d := range dirs {
		if !slices.Contains(r.foundDataDirs, d) {
			r.foundDataDirs = append(r.foundDataDirs, d)
		}
	}
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
