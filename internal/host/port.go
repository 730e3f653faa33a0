package host

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
)

// PortUse is one port skiff will listen on, described for the user.
type PortUse struct {
	// Network is "tcp" or "udp"; empty means "tcp".
	Network string
	// IP is the address the component binds; empty means 127.0.0.1. A port
	// held on another address of the host, or on all of them, is found too.
	IP string
	// Port is the port number, 1 to 65535.
	Port int
	// What names the component, like "kube-scheduler".
	What string
	// Hint says how to move or avoid it, starting with "; ", like
	// "; move it with --kube-scheduler-arg=secure-port=N".
	Hint string
}

// CheckPortFree reports a loopback TCP port that something already holds, naming
// the port, what needs it and hint (how to move it), so that start-up fails in one
// line before a component would fail deep inside. It races with other programs,
// but it turns the common case (another server or node running) into a clear
// message.
func CheckPortFree(port int, what, hint string) error {
	return CheckPortsFree([]PortUse{{Port: port, What: what, Hint: hint}})
}

// CheckPortsFree binds each port for a moment and returns the first that
// cannot be bound, as "port N (WHAT) is not available: CAUSE; HINT". It is
// how start-up refuses a taken port before it writes anything.
func CheckPortsFree(uses []PortUse) error {
	for _, u := range uses {
		if err := bindOnce(u); err != nil {
			var se *os.SyscallError
			if errors.As(err, &se) {
				err = se.Err
			}
			port := strconv.Itoa(u.Port)
			if u.Network == "udp" {
				port += "/udp"
			}
			return fmt.Errorf("port %s (%s) is not available: %w%s", port, u.What, err, u.Hint)
		}
	}
	return nil
}

func bindOnce(u PortUse) error {
	ip := u.IP
	if ip == "" {
		ip = "127.0.0.1"
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(u.Port))
	if u.Network == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ln.Close()
}
