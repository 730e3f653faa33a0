package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/skiffkube/skiff/internal/controlplane"
)

// checkDataDir makes sure the data dir can be written before anything is
// written to it, so the error names the path instead of some file deep in it.
func checkDataDir(l controlplane.Layout) error {
	if err := os.MkdirAll(l.ServerDir(), 0o700); err != nil {
		return fmt.Errorf("data-dir %s is not writable: %w", l.DataDir, err)
	}
	f, err := os.CreateTemp(l.ServerDir(), ".write-check-*")
	if err != nil {
		return fmt.Errorf("data-dir %s is not writable: %w", l.DataDir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// lockDataDir takes an exclusive lock on the data dir so that a second
// server on the same data dir fails at once instead of sharing the database
// and certificates. The kernel releases it when the process ends.
func lockDataDir(l controlplane.Layout) (release func(), err error) {
	f, err := os.OpenFile(l.LockFile(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking data-dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data-dir %s is in use by another skiff process (lock %s)", l.DataDir, l.LockFile())
		}
		return nil, fmt.Errorf("locking data-dir: %w", err)
	}
	return func() { f.Close() }, nil
}

// listen opens the supervisor's port now, so that a port in use fails start-up
// before anything is written, and names the port and the flag.
func listen(bindAddress string, port int) (net.Listener, error) {
	addr := net.JoinHostPort(bindAddress, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("https-listen-port %d: cannot listen on %s: %w", port, addr, unwrapSyscall(err))
	}
	return ln, nil
}

// unwrapSyscall drops the "listen tcp ..." wrapping the caller's message already
// says.
func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// socketPathOK rejects data dirs whose unix socket path would exceed the
// kernel's limit, which otherwise fails deep inside the datastore or the
// egress proxy.
func socketPathOK(path string) error {
	const max = 107 // sizeof(sockaddr_un.sun_path) - 1
	if len(path) > max {
		return fmt.Errorf("data-dir is too long: the unix socket %s would be %d bytes, over the limit of %d", filepath.Base(path), len(path), max)
	}
	return nil
}
