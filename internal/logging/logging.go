// Package logging builds skiff's one structured logger and routes the logs of
// embedded upstream libraries (klog, logrus, grpc) into it.
//
// Start-up must read as a few lines, so upstream output is demoted to debug
// level: `--debug` or `-v N` brings it back.
package logging

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/grpclog"
	"k8s.io/klog/v2"
)

// Options choose how much is shown.
type Options struct {
	// Debug shows debug records, upstream ones included.
	Debug bool
	// Verbosity is klog's -v level for upstream components. A value above zero
	// implies Debug, since upstream records are debug records to us.
	Verbosity int
}

// New returns skiff's logger writing to w, and routes upstream loggers into it.
// Routing is process-global state forced on us by klog, logrus and grpc, so it
// happens here, once, at the edge of the program.
func New(w io.Writer, opts Options) *slog.Logger {
	level := slog.LevelInfo
	if opts.Debug || opts.Verbosity > 0 {
		level = slog.LevelDebug
	}
	h := &consoleHandler{w: w, mu: &sync.Mutex{}, level: level}
	log := slog.New(h)
	routeKlog(h, opts.Verbosity)
	routeLogrus(log.With("component", "kine"), level)
	routeStdlib(log)
	if level > slog.LevelDebug {
		grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
	}
	return log
}

// consoleHandler prints one readable line a record:
//
//	18:40:01.123 INFO  apiserver: apiserver ready in 1.2s key=value
type consoleHandler struct {
	w      io.Writer
	mu     *sync.Mutex
	level  slog.Level
	attrs  []slog.Attr
	groups string
}

func (h *consoleHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *consoleHandler) Handle(_ context.Context, r slog.Record) error {
	var component string
	var rest []byte
	add := func(a slog.Attr) bool {
		if a.Key == "component" && h.groups == "" {
			component = a.Value.String()
			return true
		}
		rest = appendAttr(rest, h.groups, a)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	line := make([]byte, 0, 128)
	line = r.Time.AppendFormat(line, "15:04:05.000")
	line = append(line, ' ')
	line = append(line, fmt.Sprintf("%-5s ", r.Level.String())...)
	if component != "" {
		line = append(line, component...)
		line = append(line, ": "...)
	}
	line = append(line, r.Message...)
	line = append(line, rest...)
	line = append(line, '\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(line)
	return err
}

func appendAttr(b []byte, group string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return b
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, ga := range a.Value.Group() {
			b = appendAttr(b, key, ga)
		}
		return b
	}
	b = append(b, ' ')
	b = append(b, key...)
	b = append(b, '=')
	s := a.Value.String()
	if needsQuote(s) {
		b = strconv.AppendQuote(b, s)
	} else {
		b = append(b, s...)
	}
	return b
}

func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for _, r := range s {
		if r <= ' ' || r == '"' || r == '=' || r > '~' {
			return true
		}
	}
	return false
}

func (h *consoleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		// Attributes added inside a group carry the group prefix.
		if h.groups != "" {
			a.Key = h.groups + "." + a.Key
		}
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *consoleHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	if c.groups != "" {
		c.groups += "."
	}
	c.groups += name
	return &c
}

// demoted hands every upstream record to the inner handler at debug level, and
// filters klog verbosity: logr's V(n) arrives as slog level -n.
type demoted struct {
	inner     slog.Handler
	verbosity int
}

func (d demoted) Enabled(ctx context.Context, l slog.Level) bool {
	if l < 0 && int(-l) > d.verbosity {
		return false
	}
	return d.inner.Enabled(ctx, slog.LevelDebug)
}

func (d demoted) Handle(ctx context.Context, r slog.Record) error {
	// logr hands errors over without asking Enabled first.
	if !d.inner.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	r2 := slog.NewRecord(r.Time, slog.LevelDebug, r.Message, r.PC)
	if r.Level >= slog.LevelError {
		r2.AddAttrs(slog.String("upstream_level", "error"))
	}
	r.Attrs(func(a slog.Attr) bool { r2.AddAttrs(a); return true })
	return d.inner.Handle(ctx, r2)
}

func (d demoted) WithAttrs(as []slog.Attr) slog.Handler {
	return demoted{inner: d.inner.WithAttrs(as), verbosity: d.verbosity}
}

func (d demoted) WithGroup(name string) slog.Handler {
	return demoted{inner: d.inner.WithGroup(name), verbosity: d.verbosity}
}

func routeKlog(h slog.Handler, verbosity int) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", strconv.Itoa(verbosity))
	inner := h.WithAttrs([]slog.Attr{slog.String("component", "k8s")})
	klog.SetLoggerWithOptions(logr.FromSlogHandler(demoted{inner: inner, verbosity: verbosity}), klog.ContextualLogger(true))
}

// logrusHook forwards kine's logrus records; its errors stay visible as
// warnings because they are about our datastore.
type logrusHook struct{ log *slog.Logger }

func (logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h logrusHook) Fire(e *logrus.Entry) error {
	level := slog.LevelDebug
	if e.Level <= logrus.ErrorLevel {
		level = slog.LevelWarn
	}
	args := make([]any, 0, 2*len(e.Data))
	for k, v := range e.Data {
		args = append(args, k, v)
	}
	h.log.Log(context.Background(), level, e.Message, args...)
	return nil
}

func routeLogrus(log *slog.Logger, level slog.Level) {
	logrus.SetOutput(io.Discard)
	// Below our level logrus would format records only for us to drop them.
	if level <= slog.LevelDebug {
		logrus.SetLevel(logrus.DebugLevel)
	} else {
		logrus.SetLevel(logrus.ErrorLevel)
	}
	logrus.AddHook(logrusHook{log: log})
}

// routeStdlib sends the standard library logger's lines (CoreDNS logs
// through it, "[LEVEL] plugin/name: message") to debug, errors to warnings;
// a failed upstream DNS query (plugin/errors) is routine offline, so it
// stays at debug.
func routeStdlib(log *slog.Logger) {
	stdlog.SetFlags(0)
	stdlog.SetOutput(stdlibWriter{log: log})
}

type stdlibWriter struct{ log *slog.Logger }

func (w stdlibWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	if lvl, rest, ok := strings.Cut(line, "] "); ok && strings.HasPrefix(lvl, "[") {
		if (lvl == "[ERROR" || lvl == "[FATAL" || lvl == "[PANIC") && !strings.HasPrefix(rest, "plugin/errors:") {
			level = slog.LevelWarn
		}
		line = rest
	}
	component := "stdlib"
	if name, msg, ok := strings.Cut(line, ": "); ok && strings.HasPrefix(name, "plugin/") {
		component, line = "coredns", strings.TrimPrefix(name, "plugin/")+": "+msg
	}
	w.log.Log(context.Background(), level, line, "component", component)
	return len(p), nil
}
