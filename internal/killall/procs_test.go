package killall

import (
	"slices"
	"testing"
)

const (
	testDataDir = "/srv/skiff"
	// testHash is a payload dir's name: 32 hex digits (internal/payload).
	testHash = "4f2a9c0e1b7d3a5c8e6f0a1b2c3d4e5f"
	testSock = "/run/skiff/containerd/containerd.sock"
)

var testIdentity = Identity{SkiffExes: []string{"/usr/local/bin/skiff"}, RunDir: "/run/skiff"}

// nodeSnapshot is a node with a skiff server, its containerd, two pods under
// their shims, and the admin's own processes around it. killall (PID 900)
// runs from a shell under sudo under sshd.
func nodeSnapshot() []Proc {
	shim := testDataDir + "/data/" + testHash + "/bin/containerd-shim-runc-v2"
	return []Proc{
		{PID: 1, PPID: 0, Exe: "/usr/lib/systemd/systemd", Cmdline: []string{"/sbin/init"}},
		{PID: 2, PPID: 0},  // kthreadd
		{PID: 50, PPID: 2}, // a kernel thread
		{PID: 300, PPID: 1, Exe: "/usr/sbin/sshd", Cmdline: []string{"sshd"}}, // admin's way in
		{PID: 310, PPID: 300, Exe: "/usr/bin/bash", Cmdline: []string{"-bash"}},
		{PID: 320, PPID: 310, Exe: "/usr/bin/sudo", Cmdline: []string{"sudo", "skiff", "killall", "--data-dir", testDataDir}},
		{PID: 900, PPID: 320, Exe: "/usr/local/bin/skiff", Cmdline: []string{"skiff", "killall", "--data-dir", testDataDir}},
		{PID: 330, PPID: 310, Exe: "/usr/bin/tail", Cmdline: []string{"tail", "-f", testDataDir + "/server.log"}},
		{PID: 340, PPID: 310, Exe: "/usr/local/bin/skiff", Cmdline: []string{"skiff", "kubectl", "logs", "-f", "web"}},
		{PID: 400, PPID: 1, Exe: "/usr/local/bin/skiff", Cmdline: []string{"/usr/local/bin/skiff", "server", "--data-dir=" + testDataDir}},
		{PID: 410, PPID: 400, Exe: "/usr/local/bin/skiff", Cmdline: []string{"containerd", "--config", testDataDir + "/agent/etc/containerd/config.toml"}},
		{PID: 500, PPID: 1, Exe: shim, Cmdline: []string{shim, "-namespace", "k8s.io", "-id", "aaa", "-address", testSock}},
		{PID: 510, PPID: 500, Exe: "/pause", Cmdline: []string{"/pause"}},
		{PID: 520, PPID: 500, Exe: "/usr/sbin/nginx", Cmdline: []string{"nginx: master process"}},
		{PID: 521, PPID: 520, Exe: "/usr/sbin/nginx", Cmdline: []string{"nginx: worker process"}},
		{PID: 600, PPID: 1, Exe: shim + " (deleted)", Cmdline: []string{shim}}, // upgraded on disk
		{PID: 610, PPID: 600, Exe: "/bin/sh", Cmdline: []string{"sh", "-c", "sleep 1d"}},
		{PID: 620, PPID: 610, Exe: "/bin/sleep", Cmdline: []string{"sleep", "1d"}},
		{PID: 700, PPID: 1, Exe: "/usr/bin/containerd", Cmdline: []string{"/usr/bin/containerd"}}, // Docker's
		{PID: 710, PPID: 700, Exe: "/usr/bin/containerd-shim-runc-v2", Cmdline: []string{"containerd-shim-runc-v2", "-id", "bbb", "-address", "/run/containerd/containerd.sock"}},
		{PID: 711, PPID: 710, Exe: "/usr/bin/redis", Cmdline: []string{"redis-server"}},
		{PID: 720, PPID: 1, Exe: "/usr/local/bin/skiff", Cmdline: []string{"skiff", "agent", "--data-dir", "/srv/skiff2"}}, // a second node, same namespaces
		{PID: 730, PPID: 1, Exe: "/opt/other/data/x/bin/runc", Cmdline: []string{"runc"}},                                  // not a payload dir
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
	sel := SelectProcesses(nodeSnapshot(), 900, testIdentity)
	// Every skiff node in killall's namespaces goes, whatever its data dir;
	// the admin's tail and kubectl, Docker's containers and a runc outside
	// a payload dir stay.
	if got, want := pids(sel.Stop), []int{400, 410, 500, 510, 520, 521, 600, 610, 620, 720}; !slices.Equal(got, want) {
		t.Errorf("selected %v, want %v", got, want)
	}
	if got, want := pids(sel.Nodes), []int{400, 410, 500, 600, 720}; !slices.Equal(got, want) {
		t.Errorf("node processes %v, want %v", got, want)
	}
	if got, want := sel.DataDirs, []string{testDataDir, "/srv/skiff2"}; !slices.Equal(got, want) {
		t.Errorf("data dirs %v, want %v", got, want)
	}
	if len(sel.Elsewhere) != 0 {
		t.Errorf("elsewhere %v, want none", pids(sel.Elsewhere))
	}
}

// The case: a server with --data-dir /some/dir ran pods and was
// stopped; killall, run without --data-dir, must find the shims by what they
// are.
func TestSelectProcessesWhateverDataDir(t *testing.T) {
	shim := "/some/dir/data/" + testHash + "/bin/containerd-shim-runc-v2"
	procs := []Proc{
		{PID: 1, Exe: "/sbin/init", Cmdline: []string{"/sbin/init"}},
		{PID: 10, PPID: 1, Exe: shim, Cmdline: []string{shim, "-namespace", "k8s.io", "-id", "a", "-address", testSock}},
		{PID: 11, PPID: 10, Exe: "/pause", Cmdline: []string{"/pause"}},
		// A shim of skiff's containerd run from outside a payload dir
		// (deleted with its data dir, say): known by its -address.
		{PID: 20, PPID: 1, Exe: "/tmp/gone/containerd-shim-runc-v2", Cmdline: []string{"containerd-shim-runc-v2", "-namespace", "k8s.io", "-address=" + testSock}},
		{PID: 21, PPID: 20, Exe: "/web", Cmdline: []string{"/web"}},
		{PID: 99, PPID: 1, Exe: "/usr/local/bin/skiff", Cmdline: []string{"skiff", "killall"}},
	}
	sel := SelectProcesses(procs, 99, testIdentity)
	if got, want := pids(sel.Stop), []int{10, 11, 20, 21}; !slices.Equal(got, want) {
		t.Errorf("selected %v, want %v", got, want)
	}
	if got, want := sel.DataDirs, []string{"/some/dir"}; !slices.Equal(got, want) {
		t.Errorf("data dirs %v, want %v", got, want)
	}
}

func TestSelectProcessesNeverSelfOrAncestors(t *testing.T) {
	// killall run from inside a pod (kubectl exec into a privileged pod
	// sharing the host's PID namespace): its shim and the shell are
	// ancestors and must survive, while the pod's other processes go.
	procs := nodeSnapshot()
	procs = append(procs,
		Proc{PID: 530, PPID: 500, Exe: "/bin/bash", Cmdline: []string{"bash"}},
		Proc{PID: 540, PPID: 530, Exe: testDataDir + "/data/" + testHash + "/bin/skiff", Cmdline: []string{"skiff", "killall"}},
	)
	sel := SelectProcesses(procs, 540, Identity{RunDir: "/run/skiff"})
	got := pids(sel.Stop)
	for _, never := range []int{0, 1, 500, 530, 540} {
		if slices.Contains(got, never) || slices.Contains(pids(sel.Nodes), never) {
			t.Errorf("selected %d, self or an ancestor: %v", never, got)
		}
	}
	for _, must := range []int{510, 520, 521, 410} {
		if !slices.Contains(got, must) {
			t.Errorf("did not select %d: %v", must, got)
		}
	}
}

func TestSelectProcessesNotSkiff(t *testing.T) {
	procs := []Proc{
		{PID: 1, Exe: "/sbin/init"},
		{PID: 10, PPID: 1, Exe: "/usr/bin/python3", Cmdline: []string{"python3", "-m", "http.server"}},
		{PID: 11, PPID: 1, Exe: "/usr/bin/k3s", Cmdline: []string{"k3s", "server"}},
		{PID: 12, PPID: 1, Exe: "/usr/bin/containerd", Cmdline: []string{"containerd", "--config", "/srv/skiff/agent/etc/containerd/config.toml"}},
		{PID: 13, PPID: 1, Exe: "/var/lib/rancher/k3s/data/abc123/bin/containerd-shim-runc-v2", Cmdline: []string{"containerd-shim-runc-v2", "-address", "/run/k3s/containerd/containerd.sock"}},
		{PID: 14, PPID: 1, Exe: "/usr/local/bin/skiff", Cmdline: []string{"skiff", "crictl", "ps"}},
		{PID: 99, PPID: 1, Exe: "/usr/local/bin/skiff", Cmdline: []string{"skiff", "killall"}},
	}
	if sel := SelectProcesses(procs, 99, testIdentity); len(sel.Stop) != 0 {
		t.Errorf("selected %v on a host without a skiff node", pids(sel.Stop))
	}
}

func TestSelectProcessesInstalledUnderAnotherName(t *testing.T) {
	procs := []Proc{
		{PID: 1, Exe: "/sbin/init"},
		{PID: 10, PPID: 1, Exe: "/opt/bin/k8s", Cmdline: []string{"k8s", "server", "--disable", "traefik"}},
		{PID: 11, PPID: 10, Exe: "/opt/bin/k8s", Cmdline: []string{"containerd", "--config", "/var/lib/skiff/agent/etc/containerd/config.toml"}},
		{PID: 12, PPID: 1, Exe: "/opt/bin/k8s", Cmdline: []string{"k8s", "kubectl", "get", "pods", "-w"}},
		{PID: 99, PPID: 1, Exe: "/opt/bin/k8s", Cmdline: []string{"k8s", "killall"}},
	}
	sel := SelectProcesses(procs, 99, Identity{SkiffExes: []string{"/opt/bin/k8s"}})
	if got := pids(sel.Stop); !slices.Equal(got, []int{10, 11}) {
		t.Errorf("selected %v, want [10 11]", got)
	}
	// A server without --data-dir uses the default one.
	if got, want := sel.DataDirs, []string{DefaultDataDir}; !slices.Equal(got, want) {
		t.Errorf("data dirs %v, want %v", got, want)
	}
}

// test/e2e/multinode runs agents in their own mount and network namespaces
// on the same host: killall on the host leaves them alone, and killall in
// an agent's namespaces leaves the host's server and the other agent alone.
func TestSelectProcessesNamespaces(t *testing.T) {
	const hostMnt, hostNet = "mnt:[4026531841]", "net:[4026531840]"
	const a1Mnt, a1Net = "mnt:[4026532301]", "net:[4026532201]"
	const a2Mnt, a2Net = "mnt:[4026532302]", "net:[4026532202]"
	hostShim := "/tmp/e2e1/data/data/" + testHash + "/bin/containerd-shim-runc-v2"
	a1Shim := "/tmp/e2e2/agent1/data/data/" + testHash + "/bin/containerd-shim-runc-v2"
	ns := func(p Proc, mnt, net string) Proc { p.MntNS, p.NetNS = mnt, net; return p }
	procs := []Proc{
		ns(Proc{PID: 1, Exe: "/sbin/init"}, hostMnt, hostNet),
		ns(Proc{PID: 5, PPID: 1, Exe: "/usr/local/go/bin/go", Cmdline: []string{"go", "test"}}, hostMnt, hostNet),
		ns(Proc{PID: 10, PPID: 5, Exe: "/w/bin/skiff", Cmdline: []string{"/w/bin/skiff", "server", "--data-dir", "/tmp/e2e1/data"}}, hostMnt, hostNet),
		ns(Proc{PID: 11, PPID: 10, Exe: "/w/bin/skiff", Cmdline: []string{"containerd", "--config", "/tmp/e2e1/data/agent/etc/containerd/config.toml"}}, hostMnt, hostNet),
		ns(Proc{PID: 12, PPID: 1, Exe: hostShim, Cmdline: []string{hostShim, "-address", testSock}}, hostMnt, hostNet),
		ns(Proc{PID: 13, PPID: 12, Exe: "/pause", Cmdline: []string{"/pause"}}, "mnt:[4026533010]", "net:[4026533011]"),
		ns(Proc{PID: 20, PPID: 5, Exe: "/w/bin/skiff", Cmdline: []string{"/w/bin/skiff", "agent", "--data-dir", "/tmp/e2e2/agent1/data"}}, a1Mnt, a1Net),
		ns(Proc{PID: 21, PPID: 20, Exe: "/w/bin/skiff", Cmdline: []string{"containerd", "--config", "/tmp/e2e2/agent1/data/agent/etc/containerd/config.toml"}}, a1Mnt, a1Net),
		ns(Proc{PID: 22, PPID: 1, Exe: a1Shim, Cmdline: []string{a1Shim, "-address", testSock}}, a1Mnt, a1Net),
		ns(Proc{PID: 23, PPID: 22, Exe: "/pause", Cmdline: []string{"/pause"}}, "mnt:[4026533020]", "net:[4026533021]"),
		ns(Proc{PID: 30, PPID: 5, Exe: "/w/bin/skiff", Cmdline: []string{"/w/bin/skiff", "agent", "--data-dir", "/tmp/e2e2/agent2/data"}}, a2Mnt, a2Net),
		// Shares only the host's network: its links and rules are the
		// ones killall removes on the host, so it is stopped too.
		ns(Proc{PID: 40, PPID: 1, Exe: "/w/bin/skiff", Cmdline: []string{"skiff", "server", "--disable-agent", "--data-dir", "/srv/cp"}}, a2Mnt, hostNet),
		ns(Proc{PID: 98, PPID: 5, Exe: "/w/bin/skiff", Cmdline: []string{"skiff", "killall"}}, hostMnt, hostNet),
		ns(Proc{PID: 99, PPID: 5, Exe: "/w/bin/skiff", Cmdline: []string{"skiff", "killall"}}, a1Mnt, a1Net),
	}
	host := SelectProcesses(procs, 98, Identity{SkiffExes: []string{"/w/bin/skiff"}, RunDir: "/run/skiff", MntNS: hostMnt, NetNS: hostNet})
	if got, want := pids(host.Stop), []int{10, 11, 12, 13, 40}; !slices.Equal(got, want) {
		t.Errorf("on the host: selected %v, want %v", got, want)
	}
	if got, want := pids(host.Elsewhere), []int{20, 21, 22, 30}; !slices.Equal(got, want) {
		t.Errorf("on the host: elsewhere %v, want %v", got, want)
	}
	agent := SelectProcesses(procs, 99, Identity{SkiffExes: []string{"/w/bin/skiff"}, RunDir: "/run/skiff", MntNS: a1Mnt, NetNS: a1Net})
	if got, want := pids(agent.Stop), []int{20, 21, 22, 23}; !slices.Equal(got, want) {
		t.Errorf("in agent1: selected %v, want %v", got, want)
	}
	if got, want := agent.DataDirs, []string{"/tmp/e2e2/agent1/data"}; !slices.Equal(got, want) {
		t.Errorf("in agent1: data dirs %v, want %v", got, want)
	}
}

// A container whose shim died was reparented to init: it is found by the
// pod cgroups of the kubelet the node record names, and only those.
func TestSelectProcessesOrphanedContainers(t *testing.T) {
	procs := []Proc{
		{PID: 1, Exe: "/sbin/init"},
		{PID: 10, PPID: 1, Exe: "/web", Cmdline: []string{"/web"}, Cgroups: []string{"/kubepods/besteffort/pod0f1e/c1", "/"}},
		{PID: 11, PPID: 10, Exe: "/bin/sh", Cmdline: []string{"sh"}, Cgroups: []string{"/kubepods/besteffort/pod0f1e/c1"}},
		{PID: 12, PPID: 1, Exe: "/pause", Cmdline: []string{"/pause"}, Cgroups: []string{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a3b_11c2.slice/cri-containerd-x.scope"}},
		{PID: 13, PPID: 1, Exe: "/db", Cmdline: []string{"/db"}, Cgroups: []string{"/kubepods/pod9e9e/c3"}}, // guaranteed QoS
		// Another kubelet sharing the host's cgroup namespace and root:
		// same cgroup layout, pods this node's kubelet does not have.
		{PID: 14, PPID: 1, Exe: "/ci-runner", Cmdline: []string{"/ci-runner"}, Cgroups: []string{"/kubepods/besteffort/podc1c1/c4"}},
		{PID: 15, PPID: 1, Exe: "/ci-runner", Cmdline: []string{"/ci-runner"}, Cgroups: []string{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podc2c2.slice/cri-containerd-y.scope"}},
		{PID: 16, PPID: 1, Exe: "/x", Cmdline: []string{"/x"}, Cgroups: []string{"/kubepods/besteffort"}}, // no pod at all
		// Another node's kubelet (test/e2e/multinode's agents) and other
		// cgroups that merely look alike.
		{PID: 20, PPID: 1, Exe: "/web", Cmdline: []string{"/web"}, Cgroups: []string{"/skiff-ske2e-agent1/kubepods/besteffort/pod1/c2"}},
		{PID: 21, PPID: 1, Exe: "/x", Cmdline: []string{"/x"}, Cgroups: []string{"/kubepods-other/a"}},
		{PID: 22, PPID: 1, Exe: "/x", Cmdline: []string{"/x"}, Cgroups: []string{"/user.slice/kubepods"}},
	}
	pods := map[string]bool{"0f1e": true, "7a3b-11c2": true, "9e9e": true, "1": true}
	sel := SelectProcesses(procs, 99, Identity{CgroupRoots: []string{"/"}, PodUIDs: pods, MntNS: "mnt:[1]", NetNS: "net:[1]"})
	if got, want := pids(sel.Stop), []int{10, 11, 12, 13}; !slices.Equal(got, want) {
		t.Errorf("cgroup root /: selected %v, want %v", got, want)
	}
	if len(sel.Nodes) != 0 {
		t.Errorf("containers counted as node processes: %v", pids(sel.Nodes))
	}
	sel = SelectProcesses(procs, 99, Identity{CgroupRoots: []string{"/skiff-ske2e-agent1"}, PodUIDs: pods})
	if got, want := pids(sel.Stop), []int{20}; !slices.Equal(got, want) {
		t.Errorf("cgroup root /skiff-ske2e-agent1: selected %v, want %v", got, want)
	}
	if sel := SelectProcesses(procs, 99, Identity{}); len(sel.Stop) != 0 {
		t.Errorf("no node record: selected %v", pids(sel.Stop))
	}
	if sel := SelectProcesses(procs, 99, Identity{CgroupRoots: []string{"/"}}); len(sel.Stop) != 0 {
		t.Errorf("no pods under the kubelet dir: selected %v", pids(sel.Stop))
	}
}

func TestPodUIDFromCgroup(t *testing.T) {
	for in, want := range map[string]string{
		"/besteffort/pod0f1e2d3c-aaaa-bbbb/c1": "0f1e2d3c-aaaa-bbbb",
		"/pod0f1e2d3c-aaaa-bbbb/c1":            "0f1e2d3c-aaaa-bbbb",
		"/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_aaaa_bbbb.slice/cri-containerd-1.scope": "0f1e2d3c-aaaa-bbbb",
		"/kubepods-pod0f1e2d3c_aaaa.slice": "0f1e2d3c-aaaa",
		"/besteffort":                      "",
		"":                                 "",
		"/kubepods-besteffort.slice":       "",
	} {
		if got := podUIDFromCgroup(in); got != want {
			t.Errorf("podUIDFromCgroup(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSelectProcessesPPIDCycle(t *testing.T) {
	// Snapshots race with exits and PID reuse; a cycle must not hang.
	procs := []Proc{{PID: 5, PPID: 6}, {PID: 6, PPID: 5}}
	if sel := SelectProcesses(procs, 5, testIdentity); len(sel.Stop) != 0 {
		t.Errorf("selected %v", pids(sel.Stop))
	}
}

func TestPayloadDataDir(t *testing.T) {
	for exe, want := range map[string]string{
		"/some/dir/data/" + testHash + "/bin/runc":           "/some/dir",
		"/some/dir/data/" + testHash + "/bin/cni/bridge":     "", // not directly in bin
		"/some/dir/data/" + testHash[:30] + "/bin/runc":      "",
		"/some/dir/data/" + testHash[:31] + "g/bin/runc":     "",
		"/some/dir/stuff/" + testHash + "/bin/runc":          "",
		"/data/" + testHash + "/bin/containerd-shim-runc-v2": "/",
	} {
		if got := payloadDataDir(exe); got != want {
			t.Errorf("payloadDataDir(%q) = %q, want %q", exe, got, want)
		}
	}
}

func TestFlagValue(t *testing.T) {
	argv := []string{"x", "-address", "/a", "--config=/c", "--data-dir", "/d", "-namespace"}
	for name, want := range map[string]string{"address": "/a", "config": "/c", "data-dir": "/d"} {
		if got, ok := flagValue(argv, name); !ok || got != want {
			t.Errorf("flagValue(%s) = %q, %v; want %q", name, got, ok, want)
		}
	}
	for _, name := range []string{"namespace", "id", "c"} {
		if got, ok := flagValue(argv, name); ok {
			t.Errorf("flagValue(%s) = %q, want none", name, got)
		}
	}
}

func TestParseCgroups(t *testing.T) {
	v1 := "12:pids:/kubepods/besteffort/pod1/c1\n11:cpu,cpuacct:/kubepods/besteffort/pod1/c1\n1:name=systemd:/system.slice\n0::/\n"
	if got, want := parseCgroups(v1), []string{"/kubepods/besteffort/pod1/c1", "/system.slice", "/"}; !slices.Equal(got, want) {
		t.Errorf("parseCgroups = %q, want %q", got, want)
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
