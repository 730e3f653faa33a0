package host

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
)

// CheckPortFree reports a loopback TCP port that something already holds, naming
// the port, what needs it and hint (how to move it), so that start-up fails in one
// line before a component would fail deep inside. It races with other programs,
// but it turns the common case (another server or node running) into a clear
// message.
func CheckPortFree(port int, what, hint string) error {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		var se *os.SyscallError
		if errors.As(err, &se) {
			err = se.Err
		}
		return fmt.Errorf("port %d (%s) is not available: %w%s", port, what, err, hint)
	}
	return ln.Close()
}
