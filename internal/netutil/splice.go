// Package netutil holds the byte-pumping both of skiff's proxies (the agent's
// load balancer and the tunnel) need.
package netutil

import (
	"context"
	"io"
	"net"
)

// closeWriter is a connection that can end its sending half alone (TCP and
// unix sockets; tunnel streams wrap their Close as one).
type closeWriter interface{ CloseWrite() error }

// Splice copies a to b and b to a. When one side ends, the other side's
// sending half is closed where the connection supports it, so protocols that
// read to EOF see it, and the other direction may finish; both connections
// are closed when both directions are done or ctx ends.
func Splice(ctx context.Context, a, b net.Conn) {
	defer a.Close()
	defer b.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(closeWriter); ok {
			_ = cw.CloseWrite()
		} else {
			// No half-close: the peer would wait for data that cannot come.
			_ = dst.Close()
		}
		done <- struct{}{}
	}
	go pipe(b, a)
	go pipe(a, b)
	select {
	case <-done:
		select {
		case <-done:
		case <-ctx.Done():
		}
	case <-ctx.Done():
	}
}
