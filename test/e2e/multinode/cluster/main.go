// Command cluster starts a multi-node skiff cluster on this host (`make
// e2e-multinode`): the server on the host, each agent in namespaces of its own
// (see package multinode), until interrupted; then it cleans everything up.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/skiffkube/skiff/test/e2e/multinode"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e-multinode:", err)
		os.Exit(1)
	}
}

func run() error {
	skiff := flag.String("skiff", "bin/skiff", "skiff binary")
	agents := flag.Int("agents", 2, "number of agents")
	dir := flag.String("dir", "/tmp/skiff-multinode", "where the nodes' data dirs and logs go")
	gateway := flag.String("gateway", "10.77.0.1/24", "the bridge's address; agents get .11, .12, ...")
	gateway6 := flag.String("gateway6", "", "for a dual-stack cluster: the bridge's IPv6 address in a /64, like fd00:77::1/64; agents get ::11, ::12, ...")
	flag.Parse()
	if err := multinode.Check(); err != nil {
		return err
	}
	bin, err := filepath.Abs(*skiff)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("skiff binary: %w (run make first)", err)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nw, err := multinode.NewNetwork("skmn", *gateway)
	if err != nil {
		return err
	}
	defer nw.Cleanup()
	gw := nw.Gateway.String()
	var dual []string
	if *gateway6 != "" {
		if err := nw.EnableIPv6(*gateway6); err != nil {
			return err
		}
		dual = []string{"--cluster-cidr", "10.42.0.0/16,fd00:42::/56", "--service-cidr", "10.43.0.0/16,fd00:43::/112"}
	}

	serverDir := filepath.Join(*dir, "server")
	kubeconfig := filepath.Join(*dir, "kubeconfig.yaml")
	serverArgs := append([]string{"server", "--data-dir", filepath.Join(serverDir, "data"),
		"--advertise-address", gw, "--node-name", "server", "--write-kubeconfig", kubeconfig}, dual...)
	server := exec.Command(bin, serverArgs...)
	srv, err := startLogged(server, filepath.Join(*dir, "server.log"))
	if err != nil {
		return err
	}
	defer func() {
		_ = srv.cmd.Process.Signal(syscall.SIGTERM)
		srv.wait(30 * time.Second)
		out, _ := exec.Command(bin, "killall", "--data-dir", filepath.Join(serverDir, "data")).CombinedOutput()
		fmt.Print(string(out))
	}()
	fmt.Println("starting the server (log:", filepath.Join(*dir, "server.log")+")")
	if err := srv.waitFor(ctx, "skiff server ready in", 3*time.Minute); err != nil {
		return err
	}
	tok, err := os.ReadFile(filepath.Join(serverDir, "data", "server", "token"))
	if err != nil {
		return err
	}
	for i := 1; i <= *agents; i++ {
		name := fmt.Sprintf("agent%d", i)
		nd, err := nw.AddNode(name, filepath.Join(*dir, name))
		if err != nil {
			return err
		}
		log := filepath.Join(*dir, name+".log")
		p, err := startLogged(nd.Command(bin, "agent", "--server", "https://"+gw+":6443", "--token", strings.TrimSpace(string(tok))), log)
		if err != nil {
			return err
		}
		defer func() {
			fmt.Print(nd.Stop(bin, p.cmd.Process.Pid))
			p.wait(10 * time.Second)
		}()
		fmt.Printf("starting %s at %s (log: %s)\n", name, nd.NodeIP(), log)
		if err := p.waitFor(ctx, "skiff agent ready in", 3*time.Minute); err != nil {
			return err
		}
	}
	fmt.Printf("cluster ready; try:\n  %s kubectl --kubeconfig %s get nodes -o wide\nCtrl-C stops and removes it.\n", bin, kubeconfig)
	<-ctx.Done()
	// A second Ctrl-C during a stuck cleanup ends the program.
	stop()
	fmt.Println("stopping")
	return nil
}

type proc struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startLogged(cmd *exec.Cmd, log string) (*proc, error) {
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, log: log, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.exited) }()
	return p, nil
}

func (p *proc) waitFor(ctx context.Context, text string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		data, _ := os.ReadFile(p.log)
		if strings.Contains(string(data), text) {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before %q; see %s", p.cmd.Args[0], text, p.log)
		case <-deadline:
			return fmt.Errorf("no %q after %s; see %s", text, timeout, p.log)
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *proc) wait(d time.Duration) {
	select {
	case <-p.exited:
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}
