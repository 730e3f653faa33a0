package etcd

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogCore routes etcd's zap logging into skiff's slog logger. etcd is
// chatty (every election, every slow disk write): its info and warn lines go
// to slog's debug level, its errors stay errors.
type slogCore struct {
	log    *slog.Logger
	fields []zapcore.Field
	// stopping downgrades errors to debug: closing the member makes its
	// servers report "http: Server closed" and the like.
	stopping *atomic.Bool
}

func newZapLogger(log *slog.Logger, stopping *atomic.Bool) *zap.Logger {
	return zap.New(&slogCore{log: log, stopping: stopping})
}

// quietLogger is for clients: their errors reach the caller.
func quietLogger() *zap.Logger { return zap.NewNop() }

func (c *slogCore) Enabled(l zapcore.Level) bool {
	if l >= zapcore.ErrorLevel {
		return c.log.Enabled(context.Background(), slog.LevelError)
	}
	return l >= zapcore.InfoLevel && c.log.Enabled(context.Background(), slog.LevelDebug)
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, fields: append(append([]zapcore.Field{}, c.fields...), fields...), stopping: c.stopping}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, k, v)
	}
	level := slog.LevelDebug
	if e.Level >= zapcore.ErrorLevel && !c.stopping.Load() {
		level = slog.LevelError
	}
	c.log.Log(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
