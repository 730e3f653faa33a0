package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
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
			name: "restore path not a snapshot",
			args: []string{"--cluster-reset", "--cluster-reset-restore-path", notADir},
			want: []string{"cluster-reset-restore-path", notADir + " is not an SQLite snapshot: no SQLite header"},
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

// TestRefusedBeforeAnyWrite starts servers and agents (with their nodes)
// whose node name, node labels or ports cannot work, and expects each to be
// refused at once in one line naming the value and the flag, with nothing
// written: the data dir and the kubeconfig do not exist afterwards.
func TestRefusedBeforeAnyWrite(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux) to give skiff another host name")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)
	token := "SK10" + strings.Repeat("ab", 32) + "::server:secret"

	cases := []struct {
		name     string
		hostname string // run in a UTS namespace with this host name
		args     []string
		want     []string
	}{
		{
			name:     "host name with an underscore",
			hostname: "edge_node01",
			args:     []string{"server"},
			want:     []string{`"edge_node01"`, "RFC 1123", "--node-name"},
		},
		{
			name:     "agent host name with an underscore",
			hostname: "edge_node01",
			args:     []string{"agent", "--server", "https://127.0.0.1:1", "--token", token},
			want:     []string{`"edge_node01"`, "--node-name"},
		},
		{
			name: "node-role label",
			args: []string{"server", "--node-label", "node-role.kubernetes.io/worker=true"},
			want: []string{"node-label", "node-role.kubernetes.io/worker=true", "may not set this label"},
		},
		{
			name: "agent node-role label",
			args: []string{"agent", "--server", "https://127.0.0.1:1", "--token", token, "--node-label", "node-role.kubernetes.io/worker=true"},
			want: []string{"node-label", "node-role.kubernetes.io/worker=true"},
		},
		{
			name: "scheduler port taken",
			args: []string{"server", "--disable-agent", "--kube-scheduler-arg=secure-port=" + busyPort},
			want: []string{"port " + busyPort + " (kube-scheduler)", "address already in use", "--kube-scheduler-arg=secure-port=N"},
		},
		{
			name: "controller-manager port taken",
			args: []string{"server", "--disable-agent", "--kube-controller-manager-arg=secure-port=" + busyPort},
			want: []string{"port " + busyPort + " (kube-controller-manager)", "--kube-controller-manager-arg=secure-port=N"},
		},
		{
			name: "kubelet health port taken",
			args: []string{"server", "--kubelet-arg=healthz-port=" + busyPort},
			want: []string{"port " + busyPort + " (kubelet health)", "--kubelet-arg=healthz-port=N"},
		},
		{
			name: "agent load balancer port taken",
			args: []string{"agent", "--server", "https://127.0.0.1:1", "--token", token, "--lb-server-port", busyPort},
			want: []string{"port " + busyPort + " (agent load balancer)", "--lb-server-port"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			dataDir, kubeconfig := filepath.Join(dir, "data"), filepath.Join(dir, "kubeconfig.yaml")
			cfgFile := filepath.Join(dir, "config.yaml")
			if err := os.WriteFile(cfgFile, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			args := append(tc.args, "--data-dir", dataDir, "--config", cfgFile)
			if tc.args[0] == "server" {
				args = append(args, "--write-kubeconfig", kubeconfig, "--https-listen-port", strconv.Itoa(freePort(t)))
			}
			var out string
			if tc.hostname != "" {
				out, err = runToExitAs(t, tc.hostname, args...)
			} else {
				out, err = runToExit(t, time.Minute, args...)
			}
			if err == nil {
				t.Fatalf("start-up succeeded; output:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if lines := strings.Count(strings.TrimSpace(out), "\n") + 1; lines > 2 {
				t.Errorf("want one clear line; got %d:\n%s", lines, out)
			}
			for _, p := range []string{dataDir, kubeconfig} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s was written by a refused start (stat: %v)", p, err)
				}
			}
		})
	}
}

// runToExitAs is runToExit with skiff in a new UTS namespace whose host name
// is hostname.
func runToExitAs(t *testing.T, hostname string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The kernel takes any name; the hostname tool refuses an underscore.
	script := `printf %s "$1" > /proc/sys/kernel/hostname && shift && exec "$@"`
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--uts", "sh", "-c", script, "sh", hostname, skiffBin(t)}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("skiff %v did not exit in time; output:\n%s", args, out)
	}
	return string(out), err
}
