package killall

import (
	"slices"
	"testing"
)

const testDataDir = "/srv/skiff"

// nodeSnapshot is a node with a skiff server, its containerd, two pods under
// their shims, and the admin's own processes around it. killall (PID 900)
// runs from a shell under sudo under sshd.
func nodeSnapshot() []Proc {
	shim := testDataDir + "/data/4f2a/bin/containerd-shim-runc-v2"
	return []Proc{
		{PID: 1, PPID: 0, Exe: "/usr/lib/systemd/systemd", Cmdline: []string{"/sbin/init"}},
		{PID: 2, PPID: 0},  // kthreadd
		{PID: 50, PPID: 2}, // a kernel thread
		{PID: 300, PPID: 1, Exe: "/usr/sbin/sshd", Cmdline: []string{"sshd"}}, // admin's way in
		{PID: 310, PPID: 300, Exe: "/usr/bin/bash", Cmdline: []string{"-bash"}},
		{PID: 320, PPID: 310, Exe: "/usr/bin/sudo", Cmdline: []string{"sudo", "skiff", "killall", "--data-dir", testDataDir}},
		{PID: 900, PPID: 320, Exe: "/usr/local/bin/skiff", Cmdline: []string{"skiff", "killall", "--data-dir", testDataDir}},
		{PID: 330, PPID: 310, Exe: "/usr/bin/tail", Cmdline: []string{"tail", "-f", testDataDir + "/server.log"}},
		{PID: 400, PPID: 1, Exe: "/usr/local/bin/skiff", Cmdline: []string{"/usr/local/bin/skiff", "server", "--data-dir=" + testDataDir}},
		{PID: 410, PPID: 400, Exe: "/usr/local/bin/skiff", Cmdline: []string{"containerd", "--config", testDataDir + "/agent/etc/containerd/config.toml"}},
		{PID: 500, PPID: 1, Exe: shim, Cmdline: []string{shim, "-namespace", "k8s.io", "-id", "aaa"}},
		{PID: 510, PPID: 500, Exe: "/pause", Cmdline: []string{"/pause"}},
		{PID: 520, PPID: 500, Exe: "/usr/sbin/nginx", Cmdline: []string{"nginx: master process"}},
		{PID: 521, PPID: 520, Exe: "/usr/sbin/nginx", Cmdline: []string{"nginx: worker process"}},
		{PID: 600, PPID: 1, Exe: shim + " (deleted)", Cmdline: []string{shim}}, // upgraded on disk
		{PID: 610, PPID: 600, Exe: "/bin/sh", Cmdline: []string{"sh", "-c", "sleep 1d"}},
		{PID: 620, PPID: 610, Exe: "/bin/sleep", Cmdline: []string{"sleep", "1d"}},
		{PID: 700, PPID: 1, Exe: "/usr/bin/containerd", Cmdline: []string{"/usr/bin/containerd"}}, // Docker's
		{PID: 710, PPID: 700, Exe: "/usr/bin/containerd-shim-runc-v2", Cmdline: []string{"containerd-shim-runc-v2", "-id", "bbb"}},
		{PID: 720, PPID: 1, Exe: "/usr/local/bin/skiff", Cmdline: []string{"skiff", "server", "--data-dir", "/srv/skiff2"}}, // another node's
		{PID: 730, PPID: 1, Exe: "/opt/other/data/x/bin/runc", Cmdline: []string{"runc"}},
	}
}

func pids(ps []Proc) []int {
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.PID)
	}
	slices.Sort(out)
	return out
}

func TestSelectProcesses(t *testing.T) {
	got := pids(SelectProcesses(nodeSnapshot(), 900, "/usr/local/bin/skiff", testDataDir))
	want := []int{400, 410, 500, 510, 520, 521, 600, 610, 620}
	if !slices.Equal(got, want) {
		t.Errorf("selected %v, want %v", got, want)
	}
}

func TestSelectProcessesNeverSelfOrAncestors(t *testing.T) {
	// killall run from inside a pod (kubectl exec into a privileged pod
	// sharing the host's PID namespace): its shim and the shell are
	// ancestors and must survive, while the pod's other processes go.
	procs := nodeSnapshot()
	procs = append(procs,
		Proc{PID: 530, PPID: 500, Exe: "/bin/bash", Cmdline: []string{"bash"}},
		Proc{PID: 540, PPID: 530, Exe: testDataDir + "/data/4f2a/bin/skiff", Cmdline: []string{"skiff", "killall", "--data-dir", testDataDir}},
	)
	got := pids(SelectProcesses(procs, 540, "", testDataDir))
	for _, never := range []int{0, 1, 500, 530, 540} {
		if slices.Contains(got, never) {
			t.Errorf("selected %d, self or an ancestor: %v", never, got)
		}
	}
	for _, must := range []int{510, 520, 521, 410} {
		if !slices.Contains(got, must) {
			t.Errorf("did not select %d: %v", must, got)
		}
	}
}

func TestSelectProcessesUnrelated(t *testing.T) {
	got := SelectProcesses(nodeSnapshot(), 900, "/usr/local/bin/skiff", "/srv/elsewhere")
	if len(got) != 0 {
		t.Errorf("selected %v for a data dir nothing uses", pids(got))
	}
}

func TestSelectProcessesDefaultDataDir(t *testing.T) {
	procs := []Proc{
		{PID: 1, Exe: "/sbin/init"},
		{PID: 10, PPID: 1, Exe: "/usr/local/bin/skiff", Cmdline: []string{"/usr/local/bin/skiff", "server"}},
		{PID: 11, PPID: 1, Exe: "/opt/bin/k8s", Cmdline: []string{"k8s", "server", "--disable", "traefik"}},
		{PID: 12, PPID: 1, Exe: "/usr/bin/python3", Cmdline: []string{"python3", "-m", "http.server"}},
		{PID: 13, PPID: 1, Exe: "/usr/local/bin/skiff", Cmdline: []string{"skiff", "server", "--data-dir", "/data"}},
		{PID: 99, PPID: 1, Exe: "/opt/bin/k8s", Cmdline: []string{"k8s", "killall"}},
	}
	// A server without --data-dir is ours when it is skiff or the same
	// binary as the caller (installed under another name).
	if got := pids(SelectProcesses(procs, 99, "/opt/bin/k8s", DefaultDataDir)); !slices.Equal(got, []int{10, 11}) {
		t.Errorf("default data dir: selected %v, want [10 11]", got)
	}
	if got := SelectProcesses(procs, 99, "/opt/bin/k8s", "/srv/other"); len(got) != 0 {
		t.Errorf("other data dir: selected %v, want none", pids(got))
	}
}

func TestSelectProcessesPPIDCycle(t *testing.T) {
	// Snapshots race with exits and PID reuse; a cycle must not hang.
	procs := []Proc{{PID: 5, PPID: 6}, {PID: 6, PPID: 5}}
	if got := SelectProcesses(procs, 5, "", testDataDir); len(got) != 0 {
		t.Errorf("selected %v", pids(got))
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and a parenthesis of its own.
	s := "4242 (my (odd) proc) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	st, err := parseStat(s)
	if err != nil {
		t.Fatal(err)
	}
	if st.state != 'S' || st.ppid != 17 || st.start != 987654 {
		t.Errorf("parseStat = %+v, want state S ppid 17 start 987654", st)
	}
	if _, err := parseStat("12 (x) S 1"); err == nil {
		t.Error("short stat: want an error")
	}
}
