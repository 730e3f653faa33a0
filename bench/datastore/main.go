// Command datastore measures the datastores a skiff server can run on, the
// way the apiserver uses them: through the etcd v3 API (the etcd client's
// kubernetes interface, which the apiserver's storage layer calls). Engines:
// kine on SQLite (started by skiff's own internal/datastore, as
// `skiff server` starts it), kine on PostgreSQL and on MySQL/MariaDB, and
// embedded etcd with one and with three members. All of them run in one
// invocation, each in a child process, phase by phase in rotating order, and
// the result is a markdown table with every figure's ratio to one-member
// etcd. docs/benchmarks.md says how to read it.
//
//	go run ./bench/datastore -postgres postgres://... -mysql mysql://...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if engine := os.Getenv(envServe); engine != "" {
		if err := serveChild(engine); err != nil {
			fmt.Fprintf(os.Stderr, "bench/datastore (%s): %v\n", engine, err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/datastore:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	engines := flag.String("engines", "sqlite,postgres,mysql,etcd1,etcd3", "engines to run, comma-separated, in this order: sqlite, postgres, mysql, etcd1, etcd3")
	pgURL := flag.String("postgres", os.Getenv("SKIFF_BENCH_POSTGRES"), "kine's PostgreSQL endpoint, postgres://user:password@127.0.0.1:5432/db?sslmode=disable; the bench drops that database's kine table first (default $SKIFF_BENCH_POSTGRES)")
	myURL := flag.String("mysql", os.Getenv("SKIFF_BENCH_MYSQL"), "kine's MySQL/MariaDB endpoint, mysql://user:password@tcp(127.0.0.1:3306)/db; the bench drops that database's kine table first (default $SKIFF_BENCH_MYSQL)")
	tmp := flag.String("tmp", os.TempDir(), "where SQLite and etcd keep their files (a temporary directory is made inside and removed)")
	flag.IntVar(&o.objects, "objects", 5000, "objects created, then read, listed and updated")
	flag.IntVar(&o.createWorkers, "create-workers", 8, "clients creating objects at once")
	flag.IntVar(&o.readers, "readers", 4, "clients reading at once in the get phase")
	flag.IntVar(&o.rounds, "rounds", 3, "the get, list, load and max-write phases each run in this many slices, interleaved with the other engines'")
	flag.DurationVar(&o.phase, "phase", 10*time.Second, "length of the get phase and of the list phase (at least one list per round)")
	flag.Int64Var(&o.pageSize, "page", 500, "keys per list page (the apiserver's usual limit)")
	flag.IntVar(&o.writeRate, "write-rate", 200, "updates per second in the sustained-load phase")
	flag.DurationVar(&o.loadTime, "load-time", 30*time.Second, "length of the sustained-load phase")
	flag.IntVar(&o.loadGets, "load-gets", 100, "gets per second during the sustained load (0: none)")
	flag.DurationVar(&o.loadListEvery, "load-list-every", 5*time.Second, "one full list this often during the sustained load (0: none)")
	flag.IntVar(&o.maxWorkers, "max-workers", 16, "clients updating at once in the max-write phase")
	flag.DurationVar(&o.maxTime, "max-time", 10*time.Second, "length of the max-write phase (0 skips it)")
	startTimeout := flag.Duration("start-timeout", 2*time.Minute, "limit for one engine to start serving")
	flag.Parse()
	if o.objects < 1 || o.rounds < 1 || o.createWorkers < 1 || o.readers < 1 || o.pageSize < 1 || o.writeRate < 1 || o.maxWorkers < 1 ||
		o.phase <= 0 || o.loadTime <= 0 || o.loadGets < 0 || o.loadListEvery < 0 || o.maxTime < 0 {
		return errors.New("-objects, -rounds, -create-workers, -readers, -page, -write-rate, -max-workers, -phase and -load-time must be positive; -load-gets, -load-list-every and -max-time 0 or more")
	}
	var defs []engineDef
	for name := range strings.SplitSeq(*engines, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(allEngines, func(d engineDef) bool { return d.key == name })
		if i < 0 {
			return fmt.Errorf("-engines: unknown engine %q (sqlite, postgres, mysql, etcd1, etcd3)", name)
		}
		if slices.ContainsFunc(defs, func(d engineDef) bool { return d.key == name }) {
			return fmt.Errorf("-engines: %q twice", name)
		}
		defs = append(defs, allEngines[i])
	}
	urls := map[string]string{"postgres": *pgURL, "mysql": *myURL}
	for _, d := range defs {
		if u, ok := urls[d.key]; ok && u == "" {
			return fmt.Errorf("-engines includes %s but -%s (or $SKIFF_BENCH_%s) is empty: give the database URL or leave %s out of -engines",
				d.key, d.key, strings.ToUpper(d.key), d.key)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp(*tmp, "skiff-bench-datastore-")
	if err != nil {
		return fmt.Errorf("-tmp: %w", err)
	}
	defer os.RemoveAll(root)
	fsync := probeFsync(root)
	loadBefore := loadAvg()

	// Every engine is started before the first measurement and runs until
	// the last. After the creates, the phases run in rounds, each a slice of
	// the phase's time on every engine in turn, the order rotated by one
	// from one visit to the next, so a slow moment of a shared machine does
	// not fall on one engine only.
	var running, all []*engine
	defer func() {
		for _, e := range running {
			e.stop()
		}
	}()
	for _, d := range defs {
		fmt.Fprintf(os.Stderr, "starting %s ... ", d.title)
		t := time.Now()
		e, err := startEngine(ctx, self, root, d, urls[d.key], *startTimeout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "failed")
			return err
		}
		fmt.Fprintf(os.Stderr, "serving on %s after %.1f s\n", e.endpoint, time.Since(t).Seconds())
		running = append(running, e)
		all = append(all, e)
	}
	states := make(map[*engine]*state, len(running))
	for _, e := range running {
		states[e] = newState(o.objects)
	}
	type phase struct {
		name string
		run  func(*engine) error
	}
	r := time.Duration(o.rounds)
	phases := []phase{
		{"get", func(e *engine) error { return phaseGet(ctx, e, o, o.phase/r) }},
		{"list", func(e *engine) error { return phaseList(ctx, e, o, o.phase/r) }},
		{"load", func(e *engine) error { return phaseLoad(ctx, e, states[e], o, o.loadTime/r) }},
	}
	if o.maxTime > 0 {
		phases = append(phases, phase{"max-write", func(e *engine) error { return phaseMaxWrite(ctx, e, states[e], o, o.maxTime/r) }})
	}
	// visit runs p on every engine, starting with the shift-th one.
	visit := func(label string, p phase, shift int) error {
		for k := range running {
			e := running[(shift+k)%len(running)]
			fmt.Fprintf(os.Stderr, "%-19s %-16s ... ", label, e.title)
			t := time.Now()
			if err := p.run(e); err != nil {
				fmt.Fprintln(os.Stderr, "failed")
				return fmt.Errorf("%s, %s phase: %w", e.title, p.name, err)
			}
			fmt.Fprintf(os.Stderr, "%.1f s\n", time.Since(t).Seconds())
		}
		return nil
	}
	began := time.Now()
	create := phase{"create", func(e *engine) error { return phaseCreate(ctx, e, states[e], o) }}
	if err := visit("create", create, 0); err != nil {
		return err
	}
	step := 1
	for round := range o.rounds {
		for _, p := range phases {
			if err := visit(fmt.Sprintf("round %d/%d %s", round+1, o.rounds, p.name), p, step); err != nil {
				return err
			}
			step++
		}
	}
	took := time.Since(began)
	for _, e := range running {
		e.stop()
	}
	running = nil
	printReport(all, o, fsync, took, loadBefore, loadAvg())
	return nil
}

// probeFsync times 100 writes of 4 KiB each followed by fdatasync in dir: the
// cost every durable commit pays on this disk.
func probeFsync(dir string) string {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var rec recorder
	for range 100 {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return "unknown (" + err.Error() + ")"
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return "unknown (" + err.Error() + ")"
		}
		rec.add(time.Since(t))
	}
	s := rec.summarize()
	return fmt.Sprintf("4 KiB write + fdatasync p50 %s, p99 %s", ms(s.p50), ms(s.p99))
}

// loadAvg is the one-minute load average: other work on the machine
// skews every figure, so the report shows it.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(string(data), " ")
	return first
}

// moduleVersion is the version of module path linked into this binary.
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				if m.Replace != nil {
					return m.Replace.Version
				}
				return m.Version
			}
		}
	}
	return "unknown"
}

func gitCommit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
