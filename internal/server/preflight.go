package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/skiffkube/skiff/internal/addons/coredns"
	"github.com/skiffkube/skiff/internal/addons/metricsserver"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/host"
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

// dataDirInUse reports a data dir another skiff process holds, without
// writing anything: the lock file is only tested if it exists. Start-up asks
// this first, so that a second server on the same data dir is told so
// rather than that the first one's ports are taken.
func dataDirInUse(l controlplane.Layout) error {
	f, err := os.OpenFile(l.LockFile(), os.O_RDWR, 0)
	if err != nil {
		return nil // no lock file yet: nobody holds it
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); errors.Is(err, syscall.EWOULDBLOCK) {
		return fmt.Errorf("data-dir %s is in use by another skiff process (lock %s)", l.DataDir, l.LockFile())
	}
	// Closing the file drops the lock again; lockDataDir takes it for good.
	return nil
}

// serverPorts are the ports the control plane and the in-process add-ons
// listen on besides the supervisor's (which start-up opens itself), each with
// the flag that moves or avoids it.
func serverPorts(cfg *config.Server, plan controlplane.Plan, advertiseIP net.IP) []host.PortUse {
	uses := plan.Ports()
	ip := advertiseIP.String()
	if !cfg.Disabled("coredns") {
		const hint = "; cluster DNS listens there on the advertise address: free it, or start with --disable coredns"
		uses = append(uses,
			host.PortUse{IP: ip, Port: coredns.DefaultPort, What: "cluster DNS", Hint: hint},
			host.PortUse{Network: "udp", IP: ip, Port: coredns.DefaultPort, What: "cluster DNS", Hint: hint})
	}
	if !cfg.Disabled("metrics-server") {
		uses = append(uses, host.PortUse{IP: ip, Port: metricsserver.DefaultPort, What: "metrics API",
			Hint: "; metrics-server listens there on the advertise address: free it, or start with --disable metrics-server"})
	}
	return uses
}
