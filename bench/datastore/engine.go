package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/v3/kubernetes"
	"go.uber.org/zap"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// engineDef is one datastore the benchmark can run.
type engineDef struct {
	key   string // flag name: sqlite, postgres, mysql, etcd1, etcd3
	title string // column heading
}

var allEngines = []engineDef{
	{"sqlite", "kine/SQLite"},
	{"postgres", "kine/PostgreSQL"},
	{"mysql", "kine/MariaDB"},
	{"etcd1", "etcd ×1"},
	{"etcd3", "etcd ×3"},
}

// stopGrace is how long a child gets after SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

// engine is one running datastore: its child process and a client that
// talks to it as the apiserver does.
type engine struct {
	engineDef
	dir      string
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	log      string
	done     chan struct{}
	endpoint string
	notes    []string
	client   *kubernetes.Client
	res      results
}

// startEngine starts def's child process in its own directory under root and
// connects a client once it prints its endpoint.
func startEngine(ctx context.Context, self, root string, def engineDef, dbURL string, timeout time.Duration) (*engine, error) {
	dir := filepath.Join(root, def.key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	e := &engine{engineDef: def, dir: dir, log: filepath.Join(root, def.key+".log"), done: make(chan struct{})}
	logf, err := os.Create(e.log)
	if err != nil {
		return nil, err
	}
	e.cmd = exec.Command(self)
	e.cmd.Env = append(os.Environ(), envServe+"="+def.key, envDir+"="+dir, envEndpoint+"="+dbURL)
	e.cmd.Stderr = logf
	out, err := e.cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if e.stdin, err = e.cmd.StdinPipe(); err != nil {
		logf.Close()
		return nil, err
	}
	// Own process group: Ctrl-C reaches the benchmark only, which stops its
	// children itself; Pdeathsig covers the benchmark being killed outright.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: starting: %w", def.title, err)
	}
	go func() {
		_ = e.cmd.Wait()
		logf.Close()
		close(e.done)
	}()

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for e.endpoint == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				<-e.done
				return nil, fmt.Errorf("%s: exited before serving: %s", def.title, e.logTail())
			}
			if v, ok := strings.CutPrefix(line, "note "); ok {
				e.notes = append(e.notes, v)
			} else if v, ok := strings.CutPrefix(line, "endpoint "); ok {
				e.endpoint = v
			}
		case <-timer.C:
			e.stop()
			return nil, fmt.Errorf("%s: not serving after %s: %s", def.title, timeout, e.logTail())
		case <-ctx.Done():
			e.stop()
			return nil, ctx.Err()
		}
	}
	go func() {
		for range lines {
		}
	}()
	e.client, err = kubernetes.New(clientv3.Config{
		Endpoints:   []string{e.endpoint},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("%s: client: %w", def.title, err)
	}
	return e, nil
}

// stop closes the client and the child (SIGTERM, SIGKILL after stopGrace).
func (e *engine) stop() {
	if e.client != nil {
		_ = e.client.Close()
		e.client = nil
	}
	_ = e.stdin.Close()
	select {
	case <-e.done:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(stopGrace):
		_ = e.cmd.Process.Kill()
		<-e.done
	}
}

// logTail is the end of the child's log, for an error message.
func (e *engine) logTail() string {
	data, err := os.ReadFile(e.log)
	if err != nil {
		return err.Error()
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
