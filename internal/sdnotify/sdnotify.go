// Package sdnotify tells a service manager (systemd's Type=notify) when
// skiff is ready and when it begins to stop, through the socket that
// NOTIFY_SOCKET names. Without NOTIFY_SOCKET it does nothing.
//
// Embedded components would announce readiness on their own and too early:
// kube-apiserver sends READY=1 as soon as it serves, the kubelet as soon as
// it starts, and containerd (a child process) inherits the variable. So the
// server and agent commands Claim the socket before anything starts: the
// variable is taken out of the process environment and only this package
// sends to it, at the moments skiff chooses, with go-systemd's states.
package sdnotify

import (
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/coreos/go-systemd/v22/daemon"
)

// EnvSocket is the environment variable systemd sets for Type=notify services.
const EnvSocket = "NOTIFY_SOCKET"

var (
	mu     sync.Mutex
	socket string
)

// Claim takes NOTIFY_SOCKET out of the process environment, so that neither
// an embedded component nor a child process sees it, and keeps it for Ready
// and Stopping. Call it before any component starts. Calling it again keeps
// the socket claimed first.
func Claim() {
	mu.Lock()
	defer mu.Unlock()
	if v := os.Getenv(EnvSocket); v != "" {
		socket = v
	}
	_ = os.Unsetenv(EnvSocket)
}

// Ready tells the service manager that start-up is complete (READY=1).
func Ready(log *slog.Logger) { send(log, daemon.SdNotifyReady) }

// Stopping tells the service manager that a stop has begun (STOPPING=1).
func Stopping(log *slog.Logger) { send(log, daemon.SdNotifyStopping) }

// send writes one state to the claimed socket, as go-systemd's SdNotify
// does, but to the socket Claim kept: SdNotify reads NOTIFY_SOCKET from the
// environment, and putting it back there for the call would mean glibc's
// setenv (this binary links cgo) while C code may be reading the
// environment. A failure is logged, not returned: the service manager's view
// is not worth stopping the node for.
func send(log *slog.Logger, state string) {
	mu.Lock()
	addr := socket
	mu.Unlock()
	if addr == "" {
		return
	}
	// A name starting with '@' is an abstract socket; the net package
	// handles that prefix itself.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err == nil {
		_, err = conn.Write([]byte(state))
		conn.Close()
	}
	if err != nil {
		log.Warn("cannot notify the service manager", "component", "sdnotify", "socket", addr, "state", state, "err", err)
		return
	}
	log.Debug("notified the service manager", "component", "sdnotify", "state", state)
}
