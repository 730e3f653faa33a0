package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestThrottle(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	th := NewThrottle(log, time.Minute)
	now := time.Unix(1000, 0)
	th.now = func() time.Time { return now }

	for i := 0; i < 30; i++ {
		th.Log("10.0.0.1:10251", "connection failed", "addr", "10.0.0.1:10251")
		now = now.Add(time.Second)
	}
	th.Log("10.0.0.2:10250", "connection failed", "addr", "10.0.0.2:10250")
	if got := strings.Count(buf.String(), "10.0.0.1:10251"); got != 1 {
		t.Errorf("30 failures within a minute gave %d lines, want 1:\n%s", got, buf.String())
	}
	if !strings.Contains(buf.String(), "10.0.0.2:10250") {
		t.Errorf("another key was held back:\n%s", buf.String())
	}
	now = now.Add(time.Minute)
	buf.Reset()
	th.Log("10.0.0.1:10251", "connection failed", "addr", "10.0.0.1:10251")
	if !strings.Contains(buf.String(), "repeated=29") {
		t.Errorf("after the interval: %q, want the count of held-back repeats (29)", buf.String())
	}
	buf.Reset()
	now = now.Add(2 * time.Minute)
	th.Log("10.0.0.1:10251", "connection failed", "addr", "10.0.0.1:10251")
	if strings.Contains(buf.String(), "repeated") {
		t.Errorf("no repeats held back, yet %q", buf.String())
	}
}

// Keys do not pile up without bound.
func TestThrottleForgetsOldKeys(t *testing.T) {
	th := NewThrottle(slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), time.Minute)
	now := time.Unix(1000, 0)
	th.now = func() time.Time { return now }
	for i := 0; i < 3*maxThrottleKeys; i++ {
		th.Log(time.Duration(i).String(), "x")
		if i%maxThrottleKeys == 0 {
			now = now.Add(2 * time.Minute)
		}
	}
	if len(th.seen) > maxThrottleKeys {
		t.Errorf("%d keys held, want at most %d", len(th.seen), maxThrottleKeys)
	}
}
