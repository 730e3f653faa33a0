// Package tunnel carries the apiserver's connections to agents' kubelets over
// one outbound websocket per agent and server.
//
// The agent dials wss://<server>/v1-skiff/connect with its kubelet client
// certificate and serves a yamux session over it; the server opens one yamux
// stream per connection the apiserver makes through its egress selector (an
// HTTP CONNECT proxy on a unix socket). Each stream starts with the target
// address on one line; the agent answers "ok" or an error on one line, then
// the stream carries the bytes. The agent only dials what it allows: its own
// kubelet port (on loopback, where agents bind it) and pod addresses.
package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// Path is the supervisor path agents connect to.
const Path = "/v1-skiff/connect"

// maxLine bounds the header lines of a stream.
const maxLine = 512

func yamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	// A server that went away without closing the TCP connection is noticed
	// within seconds, so the agent reconnects to the next one promptly.
	c.KeepAliveInterval = 10 * time.Second
	// yamux refuses a config with both a writer and a logger.
	c.LogOutput = nil
	c.Logger = debugLogger{log}
	return c
}

// debugLogger routes yamux's messages to debug level.
type debugLogger struct{ log *slog.Logger }

func (d debugLogger) Print(v ...interface{}) { d.log.Debug(strings.TrimSpace(fmt.Sprint(v...))) }
func (d debugLogger) Printf(format string, v ...interface{}) {
	d.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (d debugLogger) Println(v ...interface{}) { d.log.Debug(strings.TrimSpace(fmt.Sprint(v...))) }

// readLine reads one header line without reading past it: the bytes after it
// belong to the proxied connection.
func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	one := make([]byte, 1)
	for b.Len() < maxLine {
		if _, err := io.ReadFull(r, one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(one[0])
	}
	return "", errors.New("header line too long")
}

// handshakeTimeout bounds a stream's header exchange: longer than the agent's
// own dial timeout (dialTimeout), so its error arrives rather than ours.
const (
	handshakeTimeout = 15 * time.Second
	dialTimeout      = 10 * time.Second
	// failureLogInterval is how often one address's failing dials are
	// logged at Info: at start the apiserver retries a port that is not
	// up yet (metrics-server) many times a second.
	failureLogInterval = 5 * time.Minute
)

// dialStream asks the agent at the other end of stream to dial addr.
func dialStream(stream net.Conn, addr string) error {
	_ = stream.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := io.WriteString(stream, addr+"\n"); err != nil {
		return err
	}
	reply, err := readLine(stream)
	if err != nil {
		return fmt.Errorf("reading the agent's reply: %w", err)
	}
	if reply != "ok" {
		return errors.New(strings.TrimPrefix(reply, "error: "))
	}
	return stream.SetDeadline(time.Time{})
}

// halfCloser makes a yamux stream's Close, which ends only the sending half
// (the peer may still send until it closes too), what netutil.Splice uses
// as CloseWrite.
type halfCloser struct{ net.Conn }

func (h halfCloser) CloseWrite() error { return h.Conn.Close() }

// oneLine makes an error usable in a header line or HTTP status line.
func oneLine(err error) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, err.Error())
}
