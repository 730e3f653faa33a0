package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// row is one line of the table: how to read a figure from an engine's
// results and show it.
type row struct {
	label string
	value func(r figures) float64 // what ratios are taken of
	show  func(r figures) string
}

// figures are one engine's summaries.
type figures struct {
	create, get, list                   summary
	loadWrite, loadGet, loadList, watch summary
	maxWrite                            summary
}

func latencyRow(label string, pick func(r figures) time.Duration) row {
	return row{label,
		func(r figures) float64 { return float64(pick(r)) },
		func(r figures) string { return ms(pick(r)) }}
}

func rateRow(label, unit string, pick func(r figures) float64) row {
	return row{label, pick, func(r figures) string {
		if pick(r) == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f%s", pick(r), unit)
	}}
}

func printReport(engines []*engine, o options, fsync string, took time.Duration, loadBefore, loadAfter string) {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("## Datastores through the etcd v3 API\n\n")
	fmt.Printf("- date: %s; commit %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), gitCommit())
	fmt.Printf("- machine: %d CPUs (%s), %s RAM, Linux %s, %s\n", runtime.NumCPU(), cpuModel(), memTotal(), strings.TrimSpace(string(kernel)), runtime.Version())
	fmt.Printf("- disk: %s\n", fsync)
	fmt.Printf("- kine %s, etcd %s\n", moduleVersion("github.com/k3s-io/kine"), moduleVersion("go.etcd.io/etcd/server/v3"))
	for _, e := range engines {
		for _, n := range e.notes {
			fmt.Printf("- %s: %s\n", e.title, n)
		}
	}
	size := 0
	for _, e := range engines {
		size = max(size, e.res.size)
	}
	fmt.Printf("- load average (1 min) %s before the phases, %s after\n", loadBefore, loadAfter)
	fmt.Printf("- %d objects of %d bytes; after the creates, %d rounds; phases took %s in all\n\n", o.objects, size, o.rounds, took.Round(time.Second))

	loadAt := fmt.Sprintf("at %d writes/s: ", o.writeRate)
	rows := []row{
		latencyRow(fmt.Sprintf("create p50 (%d clients)", o.createWorkers), func(r figures) time.Duration { return r.create.p50 }),
		latencyRow("create p99", func(r figures) time.Duration { return r.create.p99 }),
		rateRow("creates/s", "", func(r figures) float64 { return r.create.rate }),
		latencyRow(fmt.Sprintf("get p50 (%d clients)", o.readers), func(r figures) time.Duration { return r.get.p50 }),
		latencyRow("get p99", func(r figures) time.Duration { return r.get.p99 }),
		rateRow("gets/s", "", func(r figures) float64 { return r.get.rate }),
		latencyRow(fmt.Sprintf("list all %d (pages of %d) p50", o.objects, o.pageSize), func(r figures) time.Duration { return r.list.p50 }),
		latencyRow("list all p99", func(r figures) time.Duration { return r.list.p99 }),
		rateRow(loadAt+"writes/s achieved", "", func(r figures) float64 { return r.loadWrite.rate }),
		latencyRow(loadAt+"write p50", func(r figures) time.Duration { return r.loadWrite.p50 }),
		latencyRow(loadAt+"write p99", func(r figures) time.Duration { return r.loadWrite.p99 }),
		latencyRow(loadAt+"watch event p50", func(r figures) time.Duration { return r.watch.p50 }),
		latencyRow(loadAt+"watch event p99", func(r figures) time.Duration { return r.watch.p99 }),
	}
	if o.loadGets > 0 {
		rows = append(rows,
			latencyRow(fmt.Sprintf("%sget p50 (%d/s)", loadAt, o.loadGets), func(r figures) time.Duration { return r.loadGet.p50 }),
			latencyRow(loadAt+"get p99", func(r figures) time.Duration { return r.loadGet.p99 }))
	}
	if o.loadListEvery > 0 {
		rows = append(rows, latencyRow(fmt.Sprintf("%slist all p99 (every %s)", loadAt, o.loadListEvery), func(r figures) time.Duration { return r.loadList.p99 }))
	}
	if o.maxTime > 0 {
		rows = append(rows,
			rateRow(fmt.Sprintf("max writes/s (%d clients)", o.maxWorkers), "", func(r figures) float64 { return r.maxWrite.rate }),
			latencyRow("max writes: p99", func(r figures) time.Duration { return r.maxWrite.p99 }))
	}

	figs := make(map[*engine]figures, len(engines))
	for _, e := range engines {
		r := &e.res
		figs[e] = figures{
			create: r.create.summarize(), get: r.get.summarize(), list: r.list.summarize(),
			loadWrite: r.loadWrite.summarize(), loadGet: r.loadGet.summarize(), loadList: r.loadList.summarize(),
			watch: r.watch.summarize(), maxWrite: r.maxWrite.summarize(),
		}
	}
	var ref *engine
	for _, e := range engines {
		if e.key == "etcd1" {
			ref = e
		}
	}
	head := []string{"measure"}
	for _, e := range engines {
		head = append(head, e.title)
	}
	fmt.Println("| " + strings.Join(head, " | ") + " |")
	fmt.Println("| --- " + strings.Repeat("| ---: ", len(engines)) + "|")
	for _, r := range rows {
		cells := []string{r.label}
		for _, e := range engines {
			cell := r.show(figs[e])
			if ref != nil && e != ref && r.value(figs[e]) > 0 && r.value(figs[ref]) > 0 {
				cell += fmt.Sprintf(" (%.2f)", r.value(figs[e])/r.value(figs[ref]))
			}
			cells = append(cells, cell)
		}
		fmt.Println("| " + strings.Join(cells, " | ") + " |")
	}
	if ref != nil {
		fmt.Println("\nIn parentheses: the ratio to one-member etcd (latency above 1: slower; rate above 1: faster).")
	}

	var problems []string
	for _, e := range engines {
		f := figs[e]
		errs := f.get.errs + f.loadWrite.errs + f.loadGet.errs + f.loadList.errs + f.maxWrite.errs
		if errs+e.res.loadSkipped+e.res.watchMissed > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d failed requests (get %d, load write %d, load get %d, load list %d, max write %d), %d writes skipped (%d in flight), %d watch events missing",
				e.title, errs, f.get.errs, f.loadWrite.errs, f.loadGet.errs, f.loadList.errs, f.maxWrite.errs, e.res.loadSkipped, maxInFlight, e.res.watchMissed))
			for _, s := range []summary{f.get, f.loadWrite, f.loadGet, f.loadList, f.maxWrite} {
				if s.first != nil {
					problems = append(problems, fmt.Sprintf("%s: first failure: %v", e.title, s.first))
					break
				}
			}
		}
	}
	if len(problems) > 0 {
		fmt.Println()
		for _, p := range problems {
			fmt.Println("- " + p)
		}
	}
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	data, _ := os.ReadFile("/proc/meminfo")
	for line := range strings.SplitSeq(string(data), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}
