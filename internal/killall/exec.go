package killall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Exec runs the host's network tools. It is an interface so that tests can
// check what killall would run without touching the host's firewall.
type Exec interface {
	// LookPath reports where name is installed, or an error when it is not.
	LookPath(name string) (string, error)
	// Run runs name with args, feeding it stdin (may be nil), and returns
	// its standard output. A failure's error includes standard error.
	Run(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error)
}

// OSExec is Exec on the real host.
type OSExec struct{}

// LookPath implements Exec.
func (OSExec) LookPath(name string) (string, error) { return exec.LookPath(name) }

// Run implements Exec.
func (OSExec) Run(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return stdout.Bytes(), fmt.Errorf("running %s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return stdout.Bytes(), fmt.Errorf("running %s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.Bytes(), nil
}

// system is the part of the kernel killall changes directly, so tests can
// run every step against a fake /proc without signalling or unmounting.
type system interface {
	Kill(pid int, sig syscall.Signal) error
	Unmount(target string) error
	Remove(path string) error
	RemoveAll(path string) error
}

// umountNoFollow is UMOUNT_NOFOLLOW, missing from package syscall: a pod
// must not be able to steer our unmount elsewhere by planting a symlink
// where a mount point was.
const umountNoFollow = 0x8

type hostSystem struct{}

func (hostSystem) Kill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// Unmount detaches lazily: a mount still busy because a process we could not
// kill holds it goes from the tree now and is freed when released.
func (hostSystem) Unmount(target string) error {
	return syscall.Unmount(target, syscall.MNT_DETACH|umountNoFollow)
}

func (hostSystem) Remove(path string) error    { return os.Remove(path) }
func (hostSystem) RemoveAll(path string) error { return os.RemoveAll(path) }

// isGone reports errors that mean the thing to undo is already undone.
func isGone(err error) bool {
	return errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL)
}
