// Package multinode runs several skiff nodes on one Linux host, as the
// multi-node tests and `make e2e-multinode` need.
//
// The host keeps the server (and its node). Every other node gets:
//   - a network namespace, linked by a veth to a bridge the harness creates,
//     with its own address on the bridge's subnet and a default route through
//     the host (and the same in IPv6 after Network.EnableIPv6);
//   - a mount namespace with a private /run (skiff's runtime state, the node
//     lock, containerd's sockets, flannel's subnet file, pod network
//     namespaces) and its own /var/lib/kubelet, /var/log/pods,
//     /var/log/containers and /var/lib/cni, bound from the node's directory;
//   - a cgroup root of its own (--kubelet-arg=cgroup-root), because a kubelet
//     removes pod cgroups it does not know under its root, and all nodes
//     share the host's cgroup hierarchy;
//   - after Node.FakeSysctls, kernel settings of its own: files bound over
//     the host's /proc/sys entries in its mount namespace.
//
// Everything needs root, ip(8) and unshare(1).
package multinode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Network is a bridge on the host and the namespaces attached to it.
type Network struct {
	// Prefix names the bridge (<prefix>br), veths (<prefix><n>) and network
	// namespaces (skiff-<prefix>-<node>); at most 6 characters.
	Prefix string
	// Gateway is the bridge's (the host's) address; nodes get .11, .12, ...
	Gateway net.IP
	subnet  *net.IPNet
	// Gateway6 is the bridge's IPv6 address after EnableIPv6; nodes get
	// ::11, ::12, ... in its /64.
	Gateway6 net.IP
	nodes    []*Node
	rules    [][]string
	rules6   [][]string
}

// Node is one node's namespaces and directory.
type Node struct {
	Name string
	IP   net.IP
	// IP6 is the node's IPv6 address when the network has IPv6.
	IP6 net.IP
	// Dir holds the node's data dir (Dir/data) and the directories bound
	// over the host's kubelet, pod log and CNI directories.
	Dir string
	// PersistentRun, when set before Command, binds a directory of the
	// node's (Dir/host/run) over /run instead of mounting a fresh tmpfs, so
	// that what a process leaves in /run (containerd's state and shim
	// sockets, the node lock) is there for the next process, as on a
	// machine whose skiff restarts without a reboot. Servers that the tests
	// stop and start again need it.
	PersistentRun bool
	netns         string
	sysctlBinds   []string
	hostVeth      string
	cgroupRoot    string
	net           *Network
}

// privateDirs are bound from the node's directory over the host's.
var privateDirs = []string{"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni"}

// NewNetwork creates the bridge with gateway/24 on it. The subnet must be
// unused on the host.
func NewNetwork(prefix, gatewayCIDR string) (*Network, error) {
	if len(prefix) == 0 || len(prefix) > 6 {
		return nil, fmt.Errorf("network prefix %q: 1 to 6 characters", prefix)
	}
	ip, subnet, err := net.ParseCIDR(gatewayCIDR)
	if err != nil {
		return nil, err
	}
	n := &Network{Prefix: prefix, Gateway: ip, subnet: subnet}
	n.Cleanup() // what a killed earlier run left
	br := n.bridge()
	if err := run("ip", "link", "add", br, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := run("ip", "addr", "add", gatewayCIDR, "dev", br); err != nil {
		n.Cleanup()
		return nil, err
	}
	if err := run("ip", "link", "set", br, "up"); err != nil {
		n.Cleanup()
		return nil, err
	}
	// Bridged and routed traffic of the nodes is accepted whatever the
	// host's FORWARD policy is.
	for _, dir := range []string{"-i", "-o"} {
		// The comment must not name skiff: the host's `skiff killall` removes
		// rules whose comment does.
		rule := []string{"FORWARD", dir, br, "-j", "ACCEPT", "-m", "comment", "--comment", "e2e-multinode " + prefix}
		if err := run("iptables", append([]string{"-I"}, rule...)...); err != nil {
			n.Cleanup()
			return nil, err
		}
		n.rules = append(n.rules, rule)
	}
	return n, nil
}

func (n *Network) bridge() string { return n.Prefix + "br" }

// EnableIPv6 adds gatewayCIDR (an IPv6 address in a /64, such as
// fd00:78::1/64) to the bridge; nodes added afterwards get an address in it
// and a default IPv6 route through the host. Addresses skip duplicate
// address detection, so they are usable at once.
func (n *Network) EnableIPv6(gatewayCIDR string) error {
	ip, subnet, err := net.ParseCIDR(gatewayCIDR)
	if err != nil || ip.To4() != nil {
		return fmt.Errorf("IPv6 gateway %q: want an IPv6 CIDR", gatewayCIDR)
	}
	if ones, _ := subnet.Mask.Size(); ones != 64 {
		return fmt.Errorf("IPv6 gateway %q: want a /64", gatewayCIDR)
	}
	if err := run("ip", "addr", "add", gatewayCIDR, "dev", n.bridge(), "nodad"); err != nil {
		return err
	}
	for _, dir := range []string{"-i", "-o"} {
		rule := []string{"FORWARD", dir, n.bridge(), "-j", "ACCEPT", "-m", "comment", "--comment", "e2e-multinode " + n.Prefix}
		if err := run("ip6tables", append([]string{"-I"}, rule...)...); err != nil {
			return err
		}
		n.rules6 = append(n.rules6, rule)
	}
	n.Gateway6 = ip
	return nil
}

// AddNode creates the namespaces and directories of the next node.
func (n *Network) AddNode(name, dir string) (*Node, error) {
	idx := len(n.nodes) + 1
	ip := slices.Clone(n.Gateway.To4())
	ip[3] = byte(10 + idx)
	nd := &Node{
		Name:       name,
		IP:         ip,
		Dir:        dir,
		netns:      "skiff-" + n.Prefix + "-" + name,
		hostVeth:   n.Prefix + strconv.Itoa(idx),
		cgroupRoot: "/skiff-" + n.Prefix + "-" + name,
		net:        n,
	}
	n.nodes = append(n.nodes, nd)
	ones, _ := n.subnet.Mask.Size()
	steps := [][]string{
		{"ip", "netns", "add", nd.netns},
		{"ip", "link", "add", nd.hostVeth, "type", "veth", "peer", "name", "eth0", "netns", nd.netns},
		{"ip", "link", "set", nd.hostVeth, "master", n.bridge(), "up"},
		{"ip", "-n", nd.netns, "addr", "add", fmt.Sprintf("%s/%d", ip, ones), "dev", "eth0"},
		{"ip", "-n", nd.netns, "link", "set", "eth0", "up"},
		{"ip", "-n", nd.netns, "link", "set", "lo", "up"},
		{"ip", "-n", nd.netns, "route", "add", "default", "via", n.Gateway.String()},
	}
	if n.Gateway6 != nil {
		nd.IP6 = slices.Clone(n.Gateway6.To16())
		nd.IP6[15] = byte(0x10 + idx)
		steps = append(steps,
			[]string{"ip", "-n", nd.netns, "addr", "add", nd.IP6.String() + "/64", "dev", "eth0", "nodad"},
			[]string{"ip", "-n", nd.netns, "-6", "route", "add", "default", "via", n.Gateway6.String()},
		)
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("node %s: %w", name, err)
		}
	}
	for _, d := range privateDirs {
		if err := os.MkdirAll(nd.hostDir(d), 0o755); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := createCgroup(nd.cgroupRoot); err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	return nd, nil
}

// NetNS is the node's network namespace, as `ip netns` names it: a test
// adds interfaces to the node with `ip -n <NetNS> ...`.
func (nd *Node) NetNS() string { return nd.netns }

// DataDir is the node's --data-dir.
func (nd *Node) DataDir() string { return filepath.Join(nd.Dir, "data") }

// NodeIP is the node's --node-ip: its IPv4 address, and its IPv6 one when
// the network has IPv6.
func (nd *Node) NodeIP() string {
	if nd.IP6 != nil {
		return nd.IP.String() + "," + nd.IP6.String()
	}
	return nd.IP.String()
}

// KubeletArgs are the flags the node must run with.
func (nd *Node) KubeletArgs() []string {
	return []string{"--kubelet-arg=cgroup-root=" + nd.cgroupRoot}
}

// Command runs `skiff <subcommand>` inside the node's namespaces with the
// node flags it needs (--data-dir, --node-ip, --node-name, the cgroup root)
// and then args, which may override them.
func (nd *Node) Command(skiff, subcommand string, args ...string) *exec.Cmd {
	// Not `ip netns exec`: its fresh /sys hides the cgroup mounts. The
	// script mounts a sysfs of the node's network namespace itself and
	// carries the cgroup mounts over.
	var script strings.Builder
	script.WriteString(`set -e
run=$1; shift
if [ -n "$run" ]; then mount --bind "$run" /run; else mount -t tmpfs -o mode=0755 tmpfs /run; fi
mkdir -p /run/.cgroup
mount --rbind /sys/fs/cgroup /run/.cgroup
mount -t sysfs sysfs /sys
mount --rbind /run/.cgroup /sys/fs/cgroup
umount -l /run/.cgroup
rmdir /run/.cgroup
`)
	// The bind mounts' sources and targets come as arguments, never inside
	// the script: a path is not shell-quoted by Go's %q.
	var binds []string
	for _, d := range privateDirs {
		binds = append(binds, nd.hostDir(d), d)
	}
	binds = append(binds, nd.sysctlBinds...)
	script.WriteString(bindScript)
	run := ""
	if nd.PersistentRun {
		run = nd.hostDir("/run")
		// Created by Command, as AddNode created the others; a failure
		// shows as the mount's.
		_ = os.MkdirAll(run, 0o755)
	}
	full := []string{"--net=/run/netns/" + nd.netns, "--", "unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", script.String(), "sh", run, strconv.Itoa(len(binds) / 2)}
	full = append(full, binds...)
	full = append(full, skiff, subcommand,
		"--data-dir", nd.DataDir(), "--node-ip", nd.NodeIP(), "--node-name", nd.Name)
	full = append(full, nd.KubeletArgs()...)
	return exec.Command("nsenter", append(full, args...)...)
}

// hostDir is the node's own directory bound over the host's dir d.
func (nd *Node) hostDir(d string) string {
	return filepath.Join(nd.Dir, "host", strings.ReplaceAll(strings.Trim(d, "/"), "/", "-"))
}

// Exec runs a command in the namespaces of the node's running process pid
// (its mount namespace holds the private /run).
func (nd *Node) Exec(pid int, name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--target", strconv.Itoa(pid), "--mount", "--net", "--", name}, args...)...)
}

// Stop cleans the node up: `skiff killall` inside its namespaces when pid
// still runs (what a user would do on that machine), then every process left
// in its cgroup root or network namespace is killed.
func (nd *Node) Stop(skiff string, pid int) string {
	var report bytes.Buffer
	if pid > 0 && syscall.Kill(pid, 0) == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "nsenter", "--target", strconv.Itoa(pid), "--mount", "--net", "--", skiff, "killall", "--data-dir", nd.DataDir())
		out, err := cmd.CombinedOutput()
		cancel()
		report.Write(out)
		if err != nil {
			fmt.Fprintf(&report, "killall in node %s: %v\n", nd.Name, err)
		}
	}
	nd.killLeftovers()
	return report.String()
}

// killLeftovers kills what is left in the node's cgroups and network
// namespace, rescanning for processes forked meanwhile.
func (nd *Node) killLeftovers() {
	for round := 0; round < 5; round++ {
		left := nd.leftovers()
		if len(left) == 0 {
			return
		}
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// leftovers are the processes in the node's cgroups or network namespace.
func (nd *Node) leftovers() []int {
	var pids []int
	for _, dir := range cgroupDirs(nd.cgroupRoot) {
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "cgroup.procs" {
				pids = append(pids, readPIDs(p)...)
			}
			return nil
		})
	}
	if out, err := exec.Command("ip", "netns", "pids", nd.netns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

// Cleanup removes what the harness made: processes, namespaces, veths,
// cgroups, the bridge and its rules. It is safe to call more than once and
// on what a killed earlier run left.
func (n *Network) Cleanup() {
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			ns, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			if name, ok := strings.CutPrefix(ns, "skiff-"+n.Prefix+"-"); ok {
				nd := &Node{Name: name, netns: ns, cgroupRoot: "/skiff-" + n.Prefix + "-" + name}
				nd.killLeftovers()
				_ = run("ip", "netns", "delete", ns)
			}
		}
	}
	// Cgroup roots are found on their own: one may outlive its namespace.
	for _, dir := range cgroupDirs("") {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if name, ok := strings.CutPrefix(e.Name(), "skiff-"+n.Prefix+"-"); ok && e.IsDir() {
				nd := &Node{Name: name, netns: "skiff-" + n.Prefix + "-" + name, cgroupRoot: "/" + e.Name()}
				nd.killLeftovers()
				removeCgroup(nd.cgroupRoot)
			}
		}
	}
	_ = run("ip", "link", "delete", n.bridge())
	for tool, rules := range map[string][][]string{"iptables": n.rules, "ip6tables": n.rules6} {
		for _, r := range rules {
			_ = run(tool, append([]string{"-D"}, r...)...)
		}
		// Rules of an earlier run that this value did not create.
		if out, err := exec.Command(tool, "-S", "FORWARD").Output(); err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, `"e2e-multinode `+n.Prefix+`"`) {
					_ = run(tool, splitQuoted(strings.Replace(line, "-A", "-D", 1))...)
				}
			}
		}
	}
	n.rules, n.rules6 = nil, nil
}

// splitQuoted splits an `iptables -S` line into words; a double-quoted word
// (a comment) may hold spaces.
func splitQuoted(line string) []string {
	var words []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// cgroupDirs are the directories of a cgroup in every mounted hierarchy.
func cgroupDirs(cg string) []string {
	var dirs []string
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries {
		if e.Type()&os.ModeSymlink != 0 || !e.IsDir() {
			continue
		}
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", e.Name(), cg))
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		dirs = []string{filepath.Join("/sys/fs/cgroup", cg)} // pure cgroup v2
	}
	return dirs
}

func createCgroup(cg string) error {
	for _, d := range cgroupDirs(cg) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		// A new v1 cpuset is empty: a child could not run anywhere.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			parent, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
			if err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(d, f), parent, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %w", d, err)
			}
		}
	}
	return nil
}

// removeCgroup removes a cgroup tree, deepest first.
func removeCgroup(cg string) {
	for _, d := range cgroupDirs(cg) {
		var dirs []string
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}

func readPIDs(path string) []int {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CheckIPv6 reports what is missing for a network with IPv6: the host's IPv6
// and ip6tables.
func CheckIPv6() error {
	data, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
	if err != nil {
		return fmt.Errorf("no IPv6 on this host: %w", err)
	}
	if strings.TrimSpace(string(data)) != "0" {
		return errors.New("IPv6 is disabled on this host (net.ipv6.conf.all.disable_ipv6=1)")
	}
	if _, err := exec.LookPath("ip6tables"); err != nil {
		return fmt.Errorf("dual-stack needs ip6tables: %w", err)
	}
	return nil
}

// ErrNotRoot is returned by Check when the harness cannot run.
var ErrNotRoot = errors.New("the multi-node harness needs root")

// Check reports what is missing for the harness.
func Check() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	for _, tool := range []string{"ip", "unshare", "nsenter", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("the multi-node harness needs %s: %w", tool, err)
		}
	}
	return nil
}
