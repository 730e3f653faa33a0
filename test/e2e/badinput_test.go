package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBadInputFailsCleanly starts a server once to have a data dir with
// state, then tries start-ups that must each fail with one clear line and
// leave the data dir exactly as it was.
func TestBadInputFailsCleanly(t *testing.T) {
	s := newServer(t)
	s.Start()
	s.Stop()
	stateDir := filepath.Join(s.DataDir, "server")
	before := snapshot(t, stateDir)

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	badConfig := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(badConfig, []byte("tls-sans: [a]\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		args   []string
		want   []string
		secret string
	}{
		{
			name: "port in use",
			args: []string{"--https-listen-port", strconv.Itoa(busyPort)},
			want: []string{"https-listen-port " + strconv.Itoa(busyPort), "address already in use"},
		},
		{
			name:   "unknown datastore scheme",
			args:   []string{"--datastore-endpoint", "mongodb://admin:hunter2@db.example:27017/k8s"},
			want:   []string{"datastore-endpoint", "mongodb://admin:xxxxx@db.example:27017/k8s", "sqlite"},
			secret: "hunter2",
		},
		{
			name:   "malformed token",
			args:   []string{"--token", "SK10abcd::server:s3cr3t-value"},
			want:   []string{"invalid token", "SK10<64 hex"},
			secret: "s3cr3t-value",
		},
		{
			name:   "token from another cluster",
			args:   []string{"--token", "SK10" + strings.Repeat("ab", 32) + "::server:othersecret"},
			want:   []string{"does not belong to this server"},
			secret: "othersecret",
		},
		{
			name: "unknown config key",
			args: []string{"--config", badConfig},
			want: []string{badConfig, `unknown key "tls-sans"`},
		},
		{
			name: "missing resolv-conf",
			args: []string{"--resolv-conf", "/nonexistent/skiff-e2e-resolv.conf"},
			want: []string{"resolv-conf", "/nonexistent/skiff-e2e-resolv.conf", "no such file"},
		},
		{
			name: "invalid CIDR",
			args: []string{"--cluster-cidr", "10.42.0.0/33"},
			want: []string{"cluster-cidr", "10.42.0.0/33"},
		},
		{
			name: "dual-stack families disagree",
			args: []string{"--cluster-cidr", "10.42.0.0/16,fd00:42::/56"},
			want: []string{"service-cidr: 10.43.0.0/16 and cluster-cidr 10.42.0.0/16,fd00:42::/56 must both be single-stack or both dual-stack"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append(s.Args(), tc.args...)
			out, err := runToExit(t, time.Minute, args...)
			if err == nil {
				t.Fatalf("start-up succeeded; output:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tc.secret != "" && strings.Contains(out, tc.secret) {
				t.Errorf("output leaks the secret %q:\n%s", tc.secret, out)
			}
			if lines := strings.Count(strings.TrimSpace(out), "\n") + 1; lines > 3 {
				t.Errorf("want a short, clear failure; got %d lines:\n%s", lines, out)
			}
			if after := snapshot(t, stateDir); !equalSnapshots(before, after) {
				t.Errorf("data dir changed by a failed start")
			}
		})
	}

	t.Run("unwritable data dir", func(t *testing.T) {
		args := append(s.Args(), "--data-dir", filepath.Join(notADir, "data"))
		out, err := runToExit(t, time.Minute, args...)
		if err == nil || !strings.Contains(out, "data-dir "+filepath.Join(notADir, "data")) || !strings.Contains(out, "not writable") {
			t.Fatalf("want an error naming the data dir; err=%v output:\n%s", err, out)
		}
	})
}

// TestSecondServerOnSameDataDirIsRefused checks the data dir lock: two
// servers must never share a database and certificates.
func TestSecondServerOnSameDataDirIsRefused(t *testing.T) {
	s := newServer(t)
	s.Start()
	args := s.Args()
	for i, a := range args {
		if a == "--https-listen-port" {
			args[i+1] = strconv.Itoa(freePort(t))
		}
	}
	out, err := runToExit(t, time.Minute, args...)
	if err == nil || !strings.Contains(out, "in use by another skiff process") {
		t.Fatalf("want the data dir lock to refuse; err=%v output:\n%s", err, out)
	}
	// The first server is unharmed.
	if code, _ := get(t, s.AnonymousClient(), s.URL()+"/readyz"); code != 200 {
		t.Fatalf("first server not ready after the refused second start: %d", code)
	}
	s.Stop()
}
