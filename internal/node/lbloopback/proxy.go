package lbloopback

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const (
	// dialTimeout bounds the connection to the node's address.
	dialTimeout = 5 * time.Second
	// udpIdle ends a UDP client's session after this long without a
	// datagram either way, as conntrack forgets an unreplied UDP flow.
	udpIdle = 60 * time.Second
	// maxUDPSessions caps the sockets one UDP listener holds open.
	maxUDPSessions = 1024
)

// listener is one running loopback listener and what it carries.
type listener struct {
	want   Want
	cancel context.CancelFunc
	closer io.Closer
	wg     sync.WaitGroup
}

// listen opens a listener on k.Addr forwarding to w.Target. Its error is
// the bind's (the port is in use, say).
func listen(parent context.Context, k Key, w Want, log *slog.Logger) (*listener, error) {
	ctx, cancel := context.WithCancel(parent)
	l := &listener{want: w, cancel: cancel}
	var lc net.ListenConfig
	switch k.Protocol {
	case corev1.ProtocolUDP:
		pc, err := lc.ListenPacket(ctx, "udp", k.Addr.String())
		if err != nil {
			cancel()
			return nil, err
		}
		l.closer = pc
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			serveUDP(ctx, pc, w.Target.String(), log)
		}()
	default:
		ln, err := lc.Listen(ctx, "tcp", k.Addr.String())
		if err != nil {
			cancel()
			return nil, err
		}
		l.closer = ln
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			serveTCP(ctx, ln, w.Target.String(), log)
		}()
	}
	return l, nil
}

// close stops the listener and ends the connections it carries.
func (l *listener) close() {
	l.cancel()
	l.closer.Close()
	l.wg.Wait()
}

func serveTCP(ctx context.Context, ln net.Listener, target string, log *slog.Logger) {
	var conns sync.WaitGroup
	defer conns.Wait()
	d := net.Dialer{Timeout: dialTimeout}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Warn("accepting on loopback", "listen", ln.Addr().String(), "err", err)
			}
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			up, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				log.Debug("forwarding from loopback", "target", target, "err", err)
				return
			}
			defer up.Close()
			// Closing both ends when the listener goes unblocks the copies.
			stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
			defer stop()
			pipe(c.(*net.TCPConn), up.(*net.TCPConn))
		}()
	}
}

// pipe copies both ways, passing on each side's half-close, until both
// directions end.
func pipe(a, b *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(2)
	copyHalf := func(dst, src *net.TCPConn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.CloseWrite()
	}
	go copyHalf(a, b)
	go copyHalf(b, a)
	wg.Wait()
}

// serveUDP relays datagrams: each client address gets its own socket
// connected to the target, whose replies go back to that client.
func serveUDP(ctx context.Context, pc net.PacketConn, target string, log *slog.Logger) {
	var (
		mu       sync.Mutex
		sessions = map[string]net.Conn{}
		wg       sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for _, s := range sessions {
			s.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	buf := make([]byte, 64*1024)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Warn("reading on loopback", "listen", pc.LocalAddr().String(), "err", err)
			}
			return
		}
		key := from.String()
		mu.Lock()
		up, ok := sessions[key]
		if !ok {
			if len(sessions) >= maxUDPSessions {
				mu.Unlock()
				continue // dropped, as a full conntrack table would
			}
			up, err = net.DialTimeout("udp", target, dialTimeout)
			if err != nil {
				mu.Unlock()
				log.Debug("forwarding from loopback", "target", target, "err", err)
				continue
			}
			sessions[key] = up
			wg.Add(1)
			go func() {
				defer wg.Done()
				replies(up, pc, from)
				mu.Lock()
				if sessions[key] == up {
					delete(sessions, key)
				}
				mu.Unlock()
				up.Close()
			}()
		}
		mu.Unlock()
		_ = up.SetDeadline(time.Now().Add(udpIdle))
		_, _ = up.Write(buf[:n])
	}
}

// replies passes the target's datagrams back to the client until the
// session idles out or is closed.
func replies(up net.Conn, pc net.PacketConn, client net.Addr) {
	buf := make([]byte, 64*1024)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		_ = up.SetDeadline(time.Now().Add(udpIdle))
		if _, err := pc.WriteTo(buf[:n], client); err != nil {
			return
		}
	}
}
