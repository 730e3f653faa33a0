package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// toolOrSkip finds a host tool the test needs: with CI=true a missing one
// fails (.ci/run installs it), elsewhere the test is skipped.
func toolOrSkip(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (Debian package %s; .ci/run installs it)", name, pkg)
	}
	t.Skipf("%s is missing (Debian package %s)", name, pkg)
	return ""
}

// installRoot is a test root for install.sh: its bin and systemd dirs, the
// data dir the service would use, and a fake systemctl that records its
// calls instead of touching the host's systemd.
type installRoot struct {
	t          *testing.T
	script     string
	root       string
	binDir     string
	systemdDir string
	dataDir    string
	calls      string // what the fake systemctl was asked, one call a line
	env        []string
}

func newInstallRoot(t *testing.T, bin string) *installRoot {
	t.Helper()
	script, err := filepath.Abs("../../install.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &installRoot{
		t:          t,
		script:     script,
		root:       filepath.Join(dir, "root"),
		calls:      filepath.Join(dir, "systemctl.calls"),
		binDir:     filepath.Join(dir, "root", "usr", "local", "bin"),
		systemdDir: filepath.Join(dir, "root", "etc", "systemd", "system"),
		dataDir:    filepath.Join(dir, "root", "var", "lib", "skiff"),
	}
	fakeBin := filepath.Join(dir, "fakebin")
	if err := os.MkdirAll(fakeBin, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := "#!/bin/sh\necho \"$*\" >> '" + r.calls + "'\n"
	if err := os.WriteFile(filepath.Join(fakeBin, "systemctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range cleanEnv() {
		if strings.HasPrefix(e, "PATH=") {
			e = "PATH=" + fakeBin + ":" + strings.TrimPrefix(e, "PATH=")
		}
		if strings.HasPrefix(e, "INSTALL_SKIFF_") || strings.HasPrefix(e, "CONTAINERD_") {
			continue
		}
		r.env = append(r.env, e)
	}
	r.env = append(r.env,
		"INSTALL_SKIFF_BIN="+bin,
		"INSTALL_SKIFF_BIN_DIR="+r.binDir,
		"INSTALL_SKIFF_SYSTEMD_DIR="+r.systemdDir,
		"INSTALL_SKIFF_SKIP_START=true",
		// A kubectl elsewhere in PATH must not change what is written.
		"INSTALL_SKIFF_SYMLINK=force",
		"SKIFF_DATA_DIR="+r.dataDir,
	)
	return r
}

// install runs install.sh with the root's environment, extra and args.
func (r *installRoot) install(extra []string, args ...string) (string, error) {
	cmd := exec.Command("sh", append([]string{r.script}, args...)...)
	cmd.Env = append(append([]string(nil), r.env...), extra...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// entry is what a file of the root is: its type and mode, its bytes' hash or
// link target, and its modification time.
type entry struct {
	Mode    fs.FileMode
	Content string
	ModTime int64
}

func (r *installRoot) snapshot() map[string]entry {
	r.t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(r.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		e := entry{Mode: info.Mode(), ModTime: info.ModTime().UnixNano()}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			e.Content, err = os.Readlink(path)
		case info.Mode().IsRegular():
			e.Content, err = fileSHA256(path)
		}
		rel, _ := filepath.Rel(r.root, path)
		out[rel] = e
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// files lists the root's files and links (not directories) with their modes.
func files(snap map[string]entry) map[string]string {
	out := map[string]string{}
	for p, e := range snap {
		if !e.Mode.IsDir() {
			out[p] = fmt.Sprintf("%v", e.Mode)
		}
	}
	return out
}

// sandboxScript runs a command in new mount and network namespaces in which
// /etc, /var/lib and /run are writable overlays of the host's, kept in the
// work dir (a tmpfs of that namespace): an uninstall script removes
// /etc/skiff or /var/lib/kubelet there, and skiff killall sees no process
// and no firewall rule of the host's, while the test root (under /tmp) is
// the real one. It creates what a node leaves in those places and, after
// the command, reports any of it left over.
//
// SANDBOX_OVERLAY names one more dir to overlay (the test root, so that a
// run changes nothing there); SANDBOX_KILLALL a killall script to replace
// with one that does nothing; SANDBOX_VOLUME a dir to mount a tmpfs on,
// holding a file "data", like a pod's volume killall could not unmount.
const sandboxScript = `set -eu
work=$1
shift
mount --make-rprivate /
mount -t tmpfs tmpfs "$work"
for d in /etc /var/lib /run ${SANDBOX_OVERLAY:-}; do
    n=$(echo "$d" | tr / _)
    mkdir -p "$work/$n/upper" "$work/$n/work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$work/$n/upper,workdir=$work/$n/work" "$d"
done
mkdir -p /etc/skiff /var/lib/kubelet/pods /run/skiff
touch /etc/skiff/config.yaml /var/lib/kubelet/pods/pod /run/skiff/node.json
if [ -n "${SANDBOX_KILLALL:-}" ]; then
    printf '#!/bin/sh\necho "fake killall: keeping the mounts"\n' >"$SANDBOX_KILLALL"
fi
if [ -n "${SANDBOX_VOLUME:-}" ]; then
    mkdir -p "$SANDBOX_VOLUME"
    mount -t tmpfs tmpfs "$SANDBOX_VOLUME"
    touch "$SANDBOX_VOLUME/data"
fi
rc=0
"$@" || rc=$?
for p in /etc/skiff /var/lib/kubelet /run/skiff; do
    if [ -e "$p" ]; then echo "LEFT OVER: $p"; fi
done
if [ -n "${SANDBOX_VOLUME:-}" ] && [ -e "$SANDBOX_VOLUME/data" ]; then
    echo "VOLUME KEPT"
fi
exit $rc
`

// uninstall runs a script install.sh wrote, in the sandbox, with the
// root's environment and extra (the SANDBOX_* settings).
func (r *installRoot) uninstall(script string, extra ...string) (string, error) {
	r.t.Helper()
	dir := r.t.TempDir()
	sandbox := filepath.Join(dir, "sandbox.sh")
	if err := os.WriteFile(sandbox, []byte(sandboxScript), 0o755); err != nil {
		r.t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--net", "--fork", "sh", sandbox, work, filepath.Join(r.binDir, script))
	cmd.Env = append(append([]string(nil), r.env...), extra...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestInstallScript installs into a test root (INSTALL_SKIFF_BIN_DIR,
// INSTALL_SKIFF_SYSTEMD_DIR, INSTALL_SKIFF_SKIP_START): the files and their
// modes, a unit systemd accepts, a second run that changes nothing, an agent
// unit beside the server's that keeps the token out of the unit, secrets
// given as flags moved into the env file, and the
// uninstall scripts that remove all of it and what the node left.
func TestInstallScript(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	analyze := toolOrSkip(t, "systemd-analyze", "systemd")
	shellcheck := toolOrSkip(t, "shellcheck", "shellcheck")
	toolOrSkip(t, "unshare", "util-linux")
	r := newInstallRoot(t, bin)
	hostEtcSkiff := exists("/etc/skiff")

	if out, err := exec.Command(shellcheck, r.script).CombinedOutput(); err != nil {
		t.Errorf("shellcheck install.sh: %v\n%s", err, out)
	}

	out, err := r.install(nil, "--node-label=skiff.io/installed=yes", "--tls-san", "k8s.example.com")
	if err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	first := r.snapshot()
	rel := func(p string) string { s, _ := filepath.Rel(r.root, p); return s }
	want := map[string]string{
		rel(filepath.Join(r.binDir, "skiff")):                 "-rwxr-xr-x",
		rel(filepath.Join(r.binDir, "kubectl")):               "Lrwxrwxrwx",
		rel(filepath.Join(r.binDir, "crictl")):                "Lrwxrwxrwx",
		rel(filepath.Join(r.binDir, "ctr")):                   "Lrwxrwxrwx",
		rel(filepath.Join(r.binDir, "skiff-killall.sh")):      "-rwxr-xr-x",
		rel(filepath.Join(r.binDir, "skiff-uninstall.sh")):    "-rwxr-xr-x",
		rel(filepath.Join(r.systemdDir, "skiff.service")):     "-rw-r--r--",
		rel(filepath.Join(r.systemdDir, "skiff.service.env")): "-rw-------",
	}
	if got := files(first); !reflect.DeepEqual(got, want) {
		t.Fatalf("files written:\n%v\nwant:\n%v\noutput:\n%s", got, want, out)
	}
	binSum, _ := fileSHA256(bin)
	if first[rel(filepath.Join(r.binDir, "skiff"))].Content != binSum {
		t.Error("the installed binary differs from INSTALL_SKIFF_BIN")
	}
	for _, tool := range []string{"kubectl", "crictl", "ctr"} {
		if target := first[rel(filepath.Join(r.binDir, tool))].Content; target != "skiff" {
			t.Errorf("%s links to %q, want skiff", tool, target)
		}
	}
	// The link runs kubectl: skiff picks the tool by the name it runs as.
	if out, err := exec.Command(filepath.Join(r.binDir, "kubectl"), "version", "--client").CombinedOutput(); err != nil || !strings.Contains(string(out), "Client Version: v1.37") {
		t.Errorf("kubectl through the link: %v\n%s", err, out)
	}

	unitPath := filepath.Join(r.systemdDir, "skiff.service")
	unit := readText(t, unitPath)
	for _, line := range []string{
		"Type=notify", "Delegate=yes", "KillMode=process", "Restart=always",
		"LimitNOFILE=1048576", "LimitNPROC=infinity", "LimitCORE=infinity", "TasksMax=infinity",
		"EnvironmentFile=-" + filepath.Join(r.systemdDir, "skiff.service.env"),
		"ExecStart=" + filepath.Join(r.binDir, "skiff") + " 'server' '--node-label=skiff.io/installed=yes' '--tls-san' 'k8s.example.com'",
	} {
		if !strings.Contains(unit, "\n"+line+"\n") {
			t.Errorf("the unit lacks the line %q:\n%s", line, unit)
		}
	}
	verifyUnit(t, analyze, unitPath)
	if env := readText(t, filepath.Join(r.systemdDir, "skiff.service.env")); !strings.Contains(env, "\nSKIFF_DATA_DIR='"+r.dataDir+"'\n") {
		t.Errorf("the env file lacks SKIFF_DATA_DIR:\n%s", env)
	}
	// No systemd runs the test: enabled through systemctl (the fake), not started.
	if calls := readText(t, r.calls); !strings.Contains(calls, "enable "+unitPath+"\n") || strings.Contains(calls, "start") {
		t.Errorf("systemctl calls:\n%s", calls)
	}
	for _, s := range []string{"skiff-killall.sh", "skiff-uninstall.sh"} {
		if out, err := exec.Command(shellcheck, filepath.Join(r.binDir, s)).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", s, err, out)
		}
	}

	t.Run("second run changes nothing", func(t *testing.T) {
		out, err := r.install(nil, "--node-label=skiff.io/installed=yes", "--tls-san", "k8s.example.com")
		if err != nil {
			t.Fatalf("install.sh again: %v\n%s", err, out)
		}
		if second := r.snapshot(); !reflect.DeepEqual(first, second) {
			for p, e := range second {
				if first[p] != e {
					t.Errorf("%s changed: %+v -> %+v", p, first[p], e)
				}
			}
			t.Fatalf("the second run changed the root; output:\n%s", out)
		}
		// Without INSTALL_SKIFF_BIN the installed binary is kept: the
		// same again.
		out, err = r.install([]string{"INSTALL_SKIFF_BIN="}, "--node-label=skiff.io/installed=yes", "--tls-san", "k8s.example.com")
		if err != nil || !strings.Contains(out, "keeping "+filepath.Join(r.binDir, "skiff")) {
			t.Fatalf("install.sh keeping the binary: %v\n%s", err, out)
		}
		if third := r.snapshot(); !reflect.DeepEqual(first, third) {
			t.Fatalf("a run that keeps the binary changed the root; output:\n%s", out)
		}
	})

	t.Run("bad input writes nothing", func(t *testing.T) {
		before := r.snapshot()
		for _, c := range []struct {
			env  []string
			want string
			args []string
		}{
			{[]string{"SKIFF_URL=https://10.0.0.1:6443"}, "SKIFF_TOKEN", nil},
			{[]string{"SKIFF_URL=http://10.0.0.1:6443", "SKIFF_TOKEN=x"}, "SKIFF_URL must be an https:// URL", nil},
			{[]string{"INSTALL_SKIFF_EXEC=bogus --flag"}, "unknown command 'bogus'", nil},
			{[]string{"INSTALL_SKIFF_BIN=/nonexistent/skiff"}, "INSTALL_SKIFF_BIN: /nonexistent/skiff", nil},
			{[]string{"INSTALL_SKIFF_EXEC=--kubelet-arg=a'b"}, "holds a quote", nil},
			// Values the env file cannot carry, refused before the binary
			// and the scripts are written.
			{[]string{"SKIFF_NODE_NAME=a'b"}, "SKIFF_NODE_NAME holds a quote", nil},
			{[]string{"HTTPS_PROXY=http://proxy\\x"}, "HTTPS_PROXY holds a quote, a backslash", nil},
			{nil, "SKIFF_TOKEN holds a quote", []string{"--token", "a'b"}},
			{nil, "--token needs a value", []string{"--tls-san", "x", "--token"}},
			// Data dirs that are / however spelt, or not plain.
			{[]string{"SKIFF_DATA_DIR=/"}, "the data dir cannot be /", nil},
			{[]string{"SKIFF_DATA_DIR=//"}, "the data dir '//' holds an empty", nil},
			{[]string{"SKIFF_DATA_DIR=/./"}, "the data dir '/./' holds", nil},
			{nil, "the data dir '/var/lib/..' holds", []string{"--data-dir", "/var/lib/.."}},
			{nil, "the data dir '/var//lib' holds", []string{"--data-dir=/var//lib"}},
		} {
			out, err := r.install(c.env, c.args...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("install.sh with %v: %v, want an error naming %q:\n%s", c.env, err, c.want, out)
			}
		}
		if after := r.snapshot(); !reflect.DeepEqual(before, after) {
			t.Errorf("refused runs changed the root")
		}
	})

	t.Run("upgrade replaces the binary only", func(t *testing.T) {
		// Another build: the same binary with a byte more (it still runs).
		newer := filepath.Join(t.TempDir(), "skiff")
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(newer, append(data, '\n'), 0o755); err != nil {
			t.Fatal(err)
		}
		before := r.snapshot()
		out, err := r.install([]string{"INSTALL_SKIFF_BIN=" + newer}, "--node-label=skiff.io/installed=yes", "--tls-san", "k8s.example.com")
		if err != nil {
			t.Fatalf("install.sh with a new binary: %v\n%s", err, out)
		}
		after := r.snapshot()
		skiff := rel(filepath.Join(r.binDir, "skiff"))
		newSum, _ := fileSHA256(newer)
		if after[skiff].Content != newSum || after[skiff].Mode != before[skiff].Mode {
			t.Errorf("the binary was not replaced: %+v", after[skiff])
		}
		for p, e := range after {
			if p != skiff && p != rel(r.binDir) && before[p] != e {
				t.Errorf("%s changed in an upgrade of the binary: %+v -> %+v", p, before[p], e)
			}
		}
	})

	const token = "SK10aaaa::server:install-test-secret"
	agentUnit := filepath.Join(r.systemdDir, "skiff-agent.service")
	t.Run("agent unit", func(t *testing.T) {
		// The token as a flag: it goes into the env file (0600) as
		// SKIFF_TOKEN, not into the unit, which every user can read.
		out, err := r.install([]string{"SKIFF_URL=https://10.0.0.1:6443"}, "--node-label=role=edge", "--token", token)
		if err != nil {
			t.Fatalf("install.sh for an agent: %v\n%s", err, out)
		}
		got := files(r.snapshot())
		for p, mode := range map[string]string{
			agentUnit:          "-rw-r--r--",
			agentUnit + ".env": "-rw-------",
			filepath.Join(r.binDir, "skiff-agent-uninstall.sh"): "-rwxr-xr-x",
		} {
			if got[rel(p)] != mode {
				t.Errorf("%s: mode %q, want %q", p, got[rel(p)], mode)
			}
		}
		unit := readText(t, agentUnit)
		if !strings.Contains(unit, "\nExecStart="+filepath.Join(r.binDir, "skiff")+" 'agent' '--node-label=role=edge'\n") || !strings.Contains(unit, "\nType=notify\n") {
			t.Errorf("agent unit:\n%s", unit)
		}
		if strings.Contains(unit, "install-test-secret") {
			t.Errorf("the token is in the unit:\n%s", unit)
		}
		env := readText(t, agentUnit+".env")
		for _, line := range []string{"SKIFF_TOKEN='" + token + "'", "SKIFF_URL='https://10.0.0.1:6443'"} {
			if !strings.Contains(env, "\n"+line+"\n") {
				t.Errorf("the agent's env file lacks %s:\n%s", line, env)
			}
		}
		verifyUnit(t, analyze, agentUnit)
	})

	t.Run("secrets as flags go to the env file", func(t *testing.T) {
		// A root of its own: a server whose every secret is a flag, in
		// each spelling.
		s := newInstallRoot(t, bin)
		out, err := s.install([]string{"INSTALL_SKIFF_EXEC=server --datastore-endpoint postgres://u:db-secret@db:5432/k8s"},
			"--agent-token=agent-secret", "-ttoken-secret", "--tls-san", "k8s.example.com")
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		unit := readText(t, filepath.Join(s.systemdDir, "skiff.service"))
		if !strings.Contains(unit, "\nExecStart="+filepath.Join(s.binDir, "skiff")+" 'server' '--tls-san' 'k8s.example.com'\n") {
			t.Errorf("unit:\n%s", unit)
		}
		envPath := filepath.Join(s.systemdDir, "skiff.service.env")
		env := readText(t, envPath)
		for _, line := range []string{
			"SKIFF_AGENT_TOKEN='agent-secret'",
			"SKIFF_DATASTORE_ENDPOINT='postgres://u:db-secret@db:5432/k8s'",
			"SKIFF_TOKEN='token-secret'",
		} {
			if !strings.Contains(env, "\n"+line+"\n") {
				t.Errorf("the env file lacks %s:\n%s", line, env)
			}
		}
		if fi, err := os.Stat(envPath); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("the env file: %v, %v; want mode 0600", fi, err)
		}
		for _, secret := range []string{"db-secret", "agent-secret", "token-secret"} {
			if strings.Contains(out, secret) || strings.Contains(unit, secret) {
				t.Errorf("%s is in install.sh's output or the unit:\n%s\n%s", secret, out, unit)
			}
		}
	})

	t.Run("uninstall", func(t *testing.T) {
		// What the node leaves in its data dir.
		leftover := filepath.Join(r.dataDir, "agent", "containerd", "leftover")
		if err := os.MkdirAll(filepath.Dir(leftover), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(leftover, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		// The agent's uninstall leaves the server's service and the shared
		// binary alone.
		if exists(agentUnit) {
			out, err := r.uninstall("skiff-agent-uninstall.sh")
			if err != nil {
				t.Fatalf("skiff-agent-uninstall.sh: %v\n%s", err, out)
			}
			for _, p := range []string{agentUnit, agentUnit + ".env", filepath.Join(r.binDir, "skiff-agent-uninstall.sh")} {
				if exists(p) {
					t.Errorf("%s is left after the agent's uninstall", p)
				}
			}
			for _, p := range []string{unitPath, filepath.Join(r.binDir, "skiff"), filepath.Join(r.binDir, "kubectl"), leftover} {
				if !exists(p) {
					t.Errorf("the agent's uninstall removed %s, which the server's service needs", p)
				}
			}
		}
		// A pod's volume that killall could not unmount keeps
		// /var/lib/kubelet; the rest goes. The test root is overlaid, so
		// this run changes nothing in it.
		before := r.snapshot()
		volume := "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/v/mount"
		out, err := r.uninstall("skiff-uninstall.sh", "SANDBOX_OVERLAY="+r.root,
			"SANDBOX_KILLALL="+filepath.Join(r.binDir, "skiff-killall.sh"), "SANDBOX_VOLUME="+volume)
		if err == nil || !strings.Contains(out, "keeping /var/lib/kubelet: still mounted under it: "+volume+"\n") ||
			!strings.Contains(out, "VOLUME KEPT") || !strings.Contains(out, "LEFT OVER: /var/lib/kubelet\n") ||
			strings.Contains(out, "LEFT OVER: /etc/skiff") || strings.Contains(out, "LEFT OVER: /run/skiff") ||
			!strings.Contains(out, "removing "+r.dataDir+"\n") {
			t.Errorf("skiff-uninstall.sh with a volume still mounted: %v, want a failure that keeps /var/lib/kubelet only:\n%s", err, out)
		}
		if after := r.snapshot(); !reflect.DeepEqual(before, after) {
			t.Fatalf("the sandboxed uninstall changed the test root")
		}

		out, err = r.uninstall("skiff-uninstall.sh")
		if err != nil || strings.Contains(out, "LEFT OVER") || !strings.Contains(out, "skiff killall:") {
			t.Fatalf("skiff-uninstall.sh: %v\n%s", err, out)
		}
		if left := files(r.snapshot()); len(left) != 0 {
			t.Errorf("left after uninstall: %v", left)
		}
		if exists(r.dataDir) {
			t.Errorf("the data dir %s is left", r.dataDir)
		}
		if calls := readText(t, r.calls); !strings.Contains(calls, "disable skiff\n") {
			t.Errorf("uninstall did not disable the unit; systemctl calls:\n%s", calls)
		}
		if exists("/etc/skiff") != hostEtcSkiff {
			t.Errorf("the host's /etc/skiff changed (the sandbox leaked)")
		}
	})
}

// verifyUnit runs systemd-analyze verify: it exits 0 even for lines it
// ignores, so any complaint naming the unit fails the test.
func verifyUnit(t *testing.T, analyze, unit string) {
	t.Helper()
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || strings.Contains(string(out), filepath.Base(unit)) {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
}

// readText is a file's text, failing the test when it cannot be read.
func readText(t *testing.T, path string) string {
	t.Helper()
	return string(readFile(t, path))
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
