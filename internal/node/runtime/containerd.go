// Package runtime runs the node's container runtime: containerd as a child process
// of skiff (the same binary, started as "containerd"), and the import of the
// air-gap images into it.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/skiffkube/skiff/internal/atomicfile"
)

// ContainerdConfig is how to run containerd.
type ContainerdConfig struct {
	// Self is the skiff executable, started with argv[0] "containerd".
	Self       string
	ConfigFile string
	Config     []byte
	Socket     string
	// BinDir goes first on containerd's PATH (shim, runc, CNI plugins).
	BinDir  string
	LogFile string
}

// Containerd is the component.
type Containerd struct {
	cfg ContainerdConfig
	log *slog.Logger

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	failed  chan error
	stopped bool
}

// NewContainerd returns the component.
func NewContainerd(cfg ContainerdConfig, log *slog.Logger) *Containerd {
	return &Containerd{cfg: cfg, log: log.With("component", "containerd"), failed: make(chan error, 1)}
}

func (c *Containerd) Name() string { return "containerd" }

// Init writes containerd's configuration.
func (c *Containerd) Init(context.Context) error {
	if err := atomicfile.Write(c.cfg.ConfigFile, c.cfg.Config, 0o600, 0o700); err != nil {
		return fmt.Errorf("writing containerd config %s: %w", c.cfg.ConfigFile, err)
	}
	if err := os.MkdirAll(filepath.Dir(c.cfg.LogFile), 0o700); err != nil {
		return err
	}
	return nil
}

// Start launches containerd. The child is started from a goroutine that keeps its
// OS thread for the child's lifetime: the parent-death signal that ends containerd
// when skiff dies is tied to the thread that forked it, not to the process.
func (c *Containerd) Start(context.Context) error {
	logf, err := os.OpenFile(c.cfg.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening containerd log %s: %w", c.cfg.LogFile, err)
	}
	cmd := exec.Command(c.cfg.Self, "--config", c.cfg.ConfigFile)
	cmd.Args[0] = "containerd"
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = childEnv(os.Environ(), c.cfg.BinDir)
	// Own process group: a Ctrl-C at skiff's terminal must not reach containerd
	// before skiff stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	started := make(chan error, 1)
	c.exited = make(chan struct{})
	go func() {
		goruntime.LockOSThread()
		defer goruntime.UnlockOSThread()
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			close(c.exited)
			return
		}
		c.mu.Lock()
		c.cmd = cmd
		c.mu.Unlock()
		started <- nil
		err := cmd.Wait()
		c.mu.Lock()
		c.exitErr = err
		stopped := c.stopped
		c.mu.Unlock()
		close(c.exited)
		if !stopped {
			c.failed <- fmt.Errorf("containerd exited: %v (see %s)", err, c.cfg.LogFile)
		}
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("starting containerd: %w", err)
	}
	return nil
}

// childEnv is skiff's environment with the payload first on PATH and without
// NOTIFY_SOCKET, so containerd never tells systemd that skiff is ready.
func childEnv(env []string, binDir string) []string {
	out := make([]string, 0, len(env)+1)
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		switch {
		case strings.HasPrefix(e, "NOTIFY_SOCKET="):
		case strings.HasPrefix(e, "PATH="):
			path = strings.TrimPrefix(e, "PATH=")
		default:
			out = append(out, e)
		}
	}
	return append(out, "PATH="+binDir+":"+path)
}

// Failed reports containerd exiting on its own.
func (c *Containerd) Failed() <-chan error { return c.failed }

// Ready is nil once containerd's CRI service answers.
func (c *Containerd) Ready() error {
	select {
	case <-c.exited:
		return fmt.Errorf("containerd exited: %v (see %s)", c.exitErr, c.cfg.LogFile)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := CRIVersion(ctx, c.cfg.Socket)
	return err
}

// CRIVersion asks the CRI service on socket for its version.
func CRIVersion(ctx context.Context, socket string) (*runtimeapi.VersionResponse, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
}

// Stop ends containerd: SIGTERM, then SIGKILL after a grace period. Containers keep
// running in their shims, which containerd finds again when it restarts.
func (c *Containerd) Stop() error {
	c.mu.Lock()
	c.stopped = true
	cmd := c.cmd
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	select {
	case <-c.exited:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-c.exited
		return errors.New("containerd did not stop within 5s and was killed")
	}
}
