// Command startup compares skiff's control plane with the same Kubernetes
// version run the usual way (etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler as separate processes), in the same run on the same
// machine: time to a ready apiserver, memory once idle, and binary size.
// It prints a markdown table; docs/benchmarks.md says how to read it.
//
//	go run ./bench/startup -skiff bin/skiff
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/startup:", err)
		os.Exit(1)
	}
}

// sample is one start of one side.
type sample struct {
	ready time.Duration     // exec → apiserver /readyz 200
	full  time.Duration     // exec → controller-manager and scheduler /healthz 200 as well
	mem   map[string]memory // per started process, with its descendants, after settling
	pki   time.Duration     // baseline only: writing the PKI before the clock starts
	etcd  time.Duration     // baseline only: exec → etcd /health 200
}

func (s sample) total() memory {
	var sum memory
	for _, m := range s.mem {
		sum = sum.plus(m)
	}
	return sum
}

func run() error {
	skiffBin := flag.String("skiff", "bin/skiff", "the skiff binary to measure")
	runs := flag.Int("runs", 3, "starts per side, alternating skiff and baseline")
	settle := flag.Duration("settle", 30*time.Second, "wait between ready and measuring RSS")
	timeout := flag.Duration("timeout", 3*time.Minute, "limit for one start to become ready")
	cacheDir := flag.String("cache", "", "where baseline binaries and compressed sizes are kept (default: bench/.cache in the module)")
	nodeRuns := flag.Int("node-runs", 3, "starts of a full server with its node (needs root; 0 skips)")
	nodeSettle := flag.Duration("node-settle", 60*time.Second, "idle time between Node Ready and measuring the node's RSS")
	agentRuns := flag.Int("agent-runs", 3, "joins of an agent to a control-plane-only server (needs root; 0 skips them)")
	addonRuns := flag.Int("addon-runs", 0, "starts of a server node with its add-ons on and with all off, alternating (needs root; 0 skips them)")
	flag.Parse()
	if *runs < 0 || *nodeRuns < 0 || *agentRuns < 0 || *addonRuns < 0 || *runs+*nodeRuns+*agentRuns+*addonRuns == 0 {
		return fmt.Errorf("-runs, -node-runs, -agent-runs and -addon-runs must be 0 or more, and not all 0")
	}

	// Ctrl-C or SIGTERM cancels ctx; every wait returns and the deferred
	// stops and removals run before the process exits.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	bin, err := filepath.Abs(*skiffBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("-skiff: %w (run make build first)", err)
	}
	gomod, err := output(ctx, ".", "go", "env", "GOMOD")
	if err != nil || gomod == "" || gomod == os.DevNull {
		return fmt.Errorf("run from inside skiff's module: go env GOMOD says %q (%v)", gomod, err)
	}
	root := filepath.Dir(gomod)
	if *cacheDir == "" {
		*cacheDir = filepath.Join(root, "bench", ".cache")
	}
	if *runs > 0 {
		if err := compareControlPlane(ctx, bin, root, *cacheDir, *runs, *settle, *timeout); err != nil {
			return err
		}
	}

	if *nodeRuns > 0 && os.Geteuid() == 0 {
		var nodes []nodeSample
		for i := range *nodeRuns {
			fmt.Fprintf(os.Stderr, "node run %d/%d ... ", i+1, *nodeRuns)
			runCtx, cancel := context.WithTimeoutCause(ctx, *timeout+*nodeSettle+2*time.Minute, errors.New("node run took too long"))
			s, err := runSkiffNode(runCtx, bin, *nodeSettle)
			cancel()
			if err != nil {
				fmt.Fprintln(os.Stderr, "failed")
				return fmt.Errorf("node run %d: %w", i+1, err)
			}
			fmt.Fprintf(os.Stderr, "Node Ready %s, %d pods %s, RSS %s\n", secs(s.nodeReady), nodeReplicas, secs(s.allPods), mib(s.mem.RSS))
			nodes = append(nodes, s)
		}
		printNodeReport(nodes, *nodeSettle)
	}
	if *addonRuns > 0 && os.Geteuid() == 0 {
		var on, off []nodeSample
		for i := range *addonRuns {
			for _, side := range []string{"on", "off"} {
				fmt.Fprintf(os.Stderr, "add-on run %d/%d, add-ons %s ... ", i+1, *addonRuns, side)
				var extra []string
				if side == "off" {
					extra = allAddons
				}
				runCtx, cancel := context.WithTimeoutCause(ctx, *timeout+*nodeSettle+2*time.Minute, errors.New("add-on run took too long"))
				s, err := runSkiffNode(runCtx, bin, *nodeSettle, extra...)
				cancel()
				if err != nil {
					fmt.Fprintln(os.Stderr, "failed")
					return fmt.Errorf("add-on run %d (%s): %w", i+1, side, err)
				}
				fmt.Fprintf(os.Stderr, "ready %s, PSS %s\n", secs(s.nodeReady), mib(s.mem.PSS))
				if side == "on" {
					on = append(on, s)
				} else {
					off = append(off, s)
				}
			}
		}
		printAddonReport(on, off, *nodeSettle)
	}
	if *agentRuns > 0 && os.Geteuid() == 0 {
		var agents []agentSample
		for i := range *agentRuns {
			fmt.Fprintf(os.Stderr, "agent run %d/%d ... ", i+1, *agentRuns)
			runCtx, cancel := context.WithTimeoutCause(ctx, *timeout+*nodeSettle, errors.New("agent run took too long"))
			s, err := runAgent(runCtx, bin, *nodeSettle)
			cancel()
			if err != nil {
				fmt.Fprintln(os.Stderr, "failed")
				return fmt.Errorf("agent run %d: %w", i+1, err)
			}
			fmt.Fprintf(os.Stderr, "Node Ready %s, PSS %s\n", secs(s.ready), mib(s.mem.PSS))
			agents = append(agents, s)
		}
		printAgentReport(agents, *nodeSettle)
	}
	return nil
}

// compareControlPlane runs skiff's control plane and the baseline runs times
// each, alternating, and prints the comparison table.
func compareControlPlane(ctx context.Context, bin, root, cacheDir string, runs int, settle, timeout time.Duration) error {
	base, err := buildBaseline(ctx, root, cacheDir)
	if err != nil {
		return err
	}

	var skiffRuns, baseRuns []sample
	for i := range runs {
		for _, side := range []string{"skiff", "baseline"} {
			fmt.Fprintf(os.Stderr, "run %d/%d: %s ... ", i+1, runs, side)
			startCtx, cancel := context.WithTimeoutCause(ctx, timeout+settle, errors.New("start-up took longer than -timeout"))
			var s sample
			if side == "skiff" {
				s, err = runSkiff(startCtx, bin, settle)
			} else {
				s, err = runBaseline(startCtx, base, settle)
			}
			cancel()
			if err != nil {
				fmt.Fprintln(os.Stderr, "failed")
				return fmt.Errorf("%s, run %d: %w", side, i+1, err)
			}
			fmt.Fprintf(os.Stderr, "ready %s, all healthy %s, RSS %s\n", secs(s.ready), secs(s.full), mib(s.total().RSS))
			if side == "skiff" {
				skiffRuns = append(skiffRuns, s)
			} else {
				baseRuns = append(baseRuns, s)
			}
		}
	}

	fmt.Fprintln(os.Stderr, "compressing the binaries (xz -9 runs at about 1 MB/s; results are cached by content)")
	files := []string{bin}
	for _, part := range baselineParts {
		files = append(files, base.bins[part.name])
	}
	sz, err := measureSizes(ctx, filepath.Join(cacheDir, "sizes.json"), files)
	if err != nil {
		return err
	}
	var baseSize sizes
	for _, part := range baselineParts {
		baseSize = baseSize.plus(sz[base.bins[part.name]])
	}
	printReport(ctx, report{
		skiffBin: bin, kubeVersion: base.kubeVersion, runs: runs, settle: settle,
		skiff: skiffRuns, base: baseRuns, skiffSize: sz[bin], baseSize: baseSize,
	})

	return nil
}

// runSkiff starts `skiff server` in a fresh data dir on free ports. The
// clock runs from exec to /readyz on the supervisor port, so it includes
// writing the PKI and starting kine.
func runSkiff(ctx context.Context, bin string, settle time.Duration) (s sample, err error) {
	dir, err := os.MkdirTemp("", "skiff-bench-skiff-")
	if err != nil {
		return s, err
	}
	defer os.RemoveAll(dir)
	ports, err := freePorts(4)
	if err != nil {
		return s, err
	}
	port, apiPort, cmPort, schedPort := ports[0], ports[1], ports[2], ports[3]
	// An empty config file keeps /etc/skiff/config.yaml out of the run.
	noConfig := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(noConfig, nil, 0o600); err != nil {
		return s, err
	}
	dataDir := filepath.Join(dir, "data")

	begin := time.Now()
	// Control plane only: the baseline runs no node either.
	p, err := startProc(dir, "skiff", bin, "server",
		"--disable-agent",
		"--config", noConfig,
		"--data-dir", dataDir,
		"--write-kubeconfig", filepath.Join(dir, "kubeconfig.yaml"),
		"--https-listen-port", strconv.Itoa(port),
		"--kube-apiserver-arg=secure-port="+strconv.Itoa(apiPort),
		"--kube-controller-manager-arg=secure-port="+strconv.Itoa(cmPort),
		"--kube-scheduler-arg=secure-port="+strconv.Itoa(schedPort))
	if err != nil {
		return s, err
	}
	procs := []*proc{p}
	defer stopAll(procs)
	caFile := filepath.Join(dataDir, "server", "tls", "server-ca.crt")
	if err := waitOK(ctx, "https://127.0.0.1:"+strconv.Itoa(port)+"/readyz", caFile, procs); err != nil {
		return s, err
	}
	s.ready = time.Since(begin)
	if err := waitHealthy(ctx, cmPort, schedPort, procs); err != nil {
		return s, err
	}
	s.full = time.Since(begin)
	return s, settleAndMeasure(ctx, &s, settle, procs)
}

// waitHealthy waits for controller-manager's and scheduler's /healthz.
func waitHealthy(ctx context.Context, cmPort, schedPort int, procs []*proc) error {
	for _, port := range []int{cmPort, schedPort} {
		if err := waitOK(ctx, "https://127.0.0.1:"+strconv.Itoa(port)+"/healthz", "", procs); err != nil {
			return err
		}
	}
	return nil
}

// settleAndMeasure lets start-up work (informer syncs, controllers' first
// passes, garbage collection) die down, then reads RSS per process tree.
func settleAndMeasure(ctx context.Context, s *sample, settle time.Duration, procs []*proc) error {
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(settle):
	}
	s.mem = map[string]memory{}
	for _, p := range procs {
		if p.exited() {
			return fmt.Errorf("%s exited after start-up; end of its log:\n%s", p.name, p.tail())
		}
		s.mem[p.name] = treeMemory(p.cmd.Process.Pid)
	}
	return nil
}

type report struct {
	skiffBin, kubeVersion string
	runs                  int
	settle                time.Duration
	skiff, base           []sample
	skiffSize, baseSize   sizes
}

func printReport(ctx context.Context, r report) {
	skiffVersion, _ := output(ctx, ".", r.skiffBin, "version")
	skiffVersion, _, _ = strings.Cut(skiffVersion, "\n")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	goVersion, _ := output(ctx, ".", "go", "env", "GOVERSION")

	fmt.Printf("## skiff vs. Kubernetes %s as separate processes\n\n", r.kubeVersion)
	fmt.Printf("- date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("- machine: %d CPUs (%s), %s RAM, Linux %s, %s\n",
		runtime.NumCPU(), cpuModel(), memTotal(), strings.TrimSpace(string(kernel)), goVersion)
	fmt.Printf("- skiff: %s (%s)\n", r.skiffBin, skiffVersion)
	fmt.Printf("- starts per side: %d, alternating; medians; RSS read %s after all components were healthy\n\n", r.runs, r.settle)

	row := func(measure, skiff, base, ratio string) {
		fmt.Printf("| %s | %s | %s | %s |\n", measure, skiff, base, ratio)
	}
	durationRow := func(measure string, get func(sample) time.Duration) {
		s, b := median(r.skiff, func(x sample) float64 { return get(x).Seconds() }), median(r.base, func(x sample) float64 { return get(x).Seconds() })
		row(measure, fmt.Sprintf("%.2f s", s), fmt.Sprintf("%.2f s", b), ratio(s, b))
	}
	sizeRow := func(measure string, s, b int64) {
		row(measure, mib(s), mib(b), ratio(float64(s), float64(b)))
	}
	row("measure", "skiff", "baseline", "skiff/baseline")
	row("---", "---:", "---:", "---:")
	durationRow("exec → apiserver /readyz 200", func(x sample) time.Duration { return x.ready })
	durationRow("exec → controller-manager and scheduler /healthz 200", func(x sample) time.Duration { return x.full })
	memoryRow := func(measure string, get func(memory) int64) {
		s := median(r.skiff, func(x sample) float64 { return float64(get(x.total())) })
		b := median(r.base, func(x sample) float64 { return float64(get(x.total())) })
		sizeRow(measure, int64(s), int64(b))
	}
	memoryRow("RSS, all processes", func(m memory) int64 { return m.RSS })
	memoryRow("… anonymous (heaps, stacks)", func(m memory) int64 { return m.Anon })
	memoryRow("… file-backed (binary text and data)", func(m memory) int64 { return m.File })
	for _, part := range baselineParts {
		v := median(r.base, func(x sample) float64 { return float64(x.mem[part.name].RSS) })
		row("RSS of "+part.name, "", mib(int64(v)), "")
	}
	sizeRow("binary size", r.skiffSize.Raw, r.baseSize.Raw)
	sizeRow("gzip -9", r.skiffSize.Gzip, r.baseSize.Gzip)
	sizeRow(strongCompressor()[0]+" "+strongCompressor()[1], r.skiffSize.Strong, r.baseSize.Strong)

	fmt.Println("\nEvery run (ready / all healthy / RSS):")
	for i := range r.skiff {
		fmt.Printf("- run %d: skiff %s / %s / %s; baseline %s / %s / %s (etcd healthy after %s; PKI written in %s beforehand)\n", i+1,
			secs(r.skiff[i].ready), secs(r.skiff[i].full), mib(r.skiff[i].total().RSS),
			secs(r.base[i].ready), secs(r.base[i].full), mib(r.base[i].total().RSS), secs(r.base[i].etcd), r.base[i].pki.Round(time.Millisecond))
	}
}

// median is the median of get over samples (the mean of the middle two for an
// even count).
func median[T any](samples []T, get func(T) float64) float64 {
	vs := make([]float64, len(samples))
	for i, s := range samples {
		vs[i] = get(s)
	}
	slices.Sort(vs)
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2
	}
	return vs[len(vs)/2]
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}
