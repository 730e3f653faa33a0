package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a process gets after SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

// proc is one process the benchmark started, its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the process has exited
}

func startProc(dir, name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv()
	// A process group of its own: Ctrl-C on the terminal reaches only the
	// benchmark, which then stops its children itself. Pdeathsig is the
	// safety net should the benchmark be killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// childEnv keeps the user's SKIFF_* variables (which skiff reads as flags)
// away from the processes under test, so both sides run as configured here.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SKIFF_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	data, _ := os.ReadFile(p.log)
	if len(data) > 3000 {
		data = data[len(data)-3000:]
	}
	return string(data)
}

// stopAll sends SIGTERM to every process group at once and SIGKILL to those
// still running after stopGrace; it returns when all have exited.
func stopAll(procs []*proc) {
	var wg sync.WaitGroup
	for _, p := range procs {
		if p == nil || p.exited() {
			continue
		}
		wg.Go(func() {
			pgid := -p.cmd.Process.Pid
			_ = syscall.Kill(pgid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(stopGrace):
				_ = syscall.Kill(pgid, syscall.SIGKILL)
				<-p.done
			}
		})
	}
	wg.Wait()
}

// memory is resident memory in bytes, from /proc/<pid>/status. RSS is Anon
// (heaps, stacks) + File (mapped binary text and data, files) + shared memory.
// PSS (from smaps_rollup) divides each shared page among the processes that map
// it, so a sum of PSS counts pages that several processes of one binary share
// once; a sum of RSS counts them in every process.
type memory struct{ RSS, Anon, File, PSS int64 }

func (a memory) plus(b memory) memory {
	return memory{a.RSS + b.RSS, a.Anon + b.Anon, a.File + b.File, a.PSS + b.PSS}
}

// treeMemory sums memory over pid and all its descendants.
func treeMemory(pid int) memory {
	children := childrenByParent()
	var sum memory
	for pending := []int{pid}; len(pending) > 0; {
		p := pending[len(pending)-1]
		pending = append(pending[:len(pending)-1], children[p]...)
		sum = sum.plus(processMemory(p))
	}
	return sum
}

// childrenByParent maps every process's parent to its children, from /proc.
func childrenByParent() map[int][]int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// The command name in parentheses may hold spaces; ppid is the
		// second field after it.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 {
			if ppid, err := strconv.Atoi(fields[1]); err == nil {
				children[ppid] = append(children[ppid], child)
			}
		}
	}
	return children
}

func processMemory(pid int) memory {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memory{}
	}
	var m memory
	for _, line := range strings.Split(string(status), "\n") {
		key, rest, _ := strings.Cut(line, ":")
		f := strings.Fields(rest) // "123456 kB"
		if len(f) == 0 {
			continue
		}
		kb, _ := strconv.ParseInt(f[0], 10, 64)
		switch key {
		case "VmRSS":
			m.RSS = kb * 1024
		case "RssAnon":
			m.Anon = kb * 1024
		case "RssFile":
			m.File = kb * 1024
		}
	}
	if rollup, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup"); err == nil {
		for _, line := range strings.Split(string(rollup), "\n") {
			if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					m.PSS = kb * 1024
				}
			}
		}
	}
	return m
}

// freePorts asks the kernel for n distinct free ports on loopback. The
// listeners stay open until all are chosen so no port comes up twice.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// pollInterval bounds how late a readiness is seen.
const pollInterval = 20 * time.Millisecond

// waitOK polls url until it answers 200. caFile verifies an https server;
// skiff writes it during start-up, so it is read once it exists. An empty
// caFile accepts any certificate: controller-manager and scheduler serve a
// self-signed one they make at start-up. It fails when ctx ends or one of
// watch exits.
func waitOK(ctx context.Context, url, caFile string, watch []*proc) error {
	var client *http.Client
	for {
		if client == nil {
			client = newClient(caFile)
		}
		if client != nil {
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		for _, p := range watch {
			if p.exited() {
				return fmt.Errorf("%s exited while waiting for %s; end of its log:\n%s", p.name, url, p.tail())
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", url, context.Cause(ctx))
		case <-time.After(pollInterval):
		}
	}
}

// newClient returns nil while caFile does not hold a certificate yet.
func newClient(caFile string) *http.Client {
	cfg := &tls.Config{InsecureSkipVerify: caFile == ""}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil
		}
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}
