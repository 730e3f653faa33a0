package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"
)

// Where hosts keep their resolver lists: the file every program reads, and
// the one systemd-resolved writes with the upstream servers its stub at
// 127.0.0.53 forwards to.
const (
	HostResolvConf     = "/etc/resolv.conf"
	ResolvedResolvConf = "/run/systemd/resolve/resolv.conf"
)

// ResolvConfInput is what ChooseResolvConf decides from.
type ResolvConfInput struct {
	// Given is --resolv-conf: used as is when set.
	Given string
	// Host and Resolved are read in this order (HostResolvConf and
	// ResolvedResolvConf on a real host); either may be missing.
	Host, Resolved string
	// Generated is where skiff writes a file of its own when neither will do.
	Generated string
	// ClusterDNS are the cluster DNS Service's IPs (--cluster-dns), what pods
	// get when the host names no resolver they can reach.
	ClusterDNS []string
}

// ResolvConfChoice is the resolver file the kubelet hands to pods: the whole
// of it to pods with dnsPolicy Default, its search list to ClusterFirst pods.
type ResolvConfChoice struct {
	// Path is the kubelet's resolvConf.
	Path string
	// Content, when not nil, is to be written to Path (Generated) first.
	Content []byte
	// Warning, when not empty, is one line for the log saying what was wrong
	// with the host's resolvers, what pods get instead and which flag
	// changes it.
	Warning string
}

// ChooseResolvConf picks the resolv.conf the kubelet gives pods so that the
// nameservers in it can be reached from a pod's network namespace. A host
// resolver on loopback (dnsmasq on 127.0.0.1, systemd-resolved's stub on
// 127.0.0.53) works for the host and for the server's CoreDNS, which runs in
// the host's namespace, but not for a pod, where 127.0.0.1 is the pod itself.
//
// In order: the --resolv-conf file as given; the host's file when every
// nameserver in it is reachable; systemd-resolved's file when that holds;
// otherwise a file of skiff's (at Generated) with the host's search and
// options lines and its reachable nameservers, or, when none is left, the
// cluster DNS, which forwards other names to the servers' own resolvers.
// K3s writes 8.8.8.8 in that last case, which an air-gapped site cannot
// reach and should not leak names to. An error means Given cannot be read.
func ChooseResolvConf(in ResolvConfInput) (ResolvConfChoice, error) {
	if in.Given != "" {
		f, err := readResolvConf(in.Given)
		if err != nil {
			return ResolvConfChoice{}, fmt.Errorf("resolv-conf %s: %w", in.Given, err)
		}
		c := ResolvConfChoice{Path: in.Given}
		if bad := f.unreachable(); len(bad) > 0 {
			c.Warning = fmt.Sprintf("--resolv-conf %s names nameservers that pods cannot reach (%s); pods get it as given", in.Given, strings.Join(bad, ", "))
		}
		return c, nil
	}
	host, hostErr := readResolvConf(in.Host)
	if hostErr == nil && host.usable() {
		return ResolvConfChoice{Path: in.Host}, nil
	}
	if resolved, err := readResolvConf(in.Resolved); err == nil && resolved.usable() {
		return ResolvConfChoice{Path: in.Resolved}, nil
	}

	var why string
	switch {
	case errors.Is(hostErr, fs.ErrNotExist):
		why = in.Host + " does not exist"
	case hostErr != nil:
		why = hostErr.Error()
	case len(host.nameservers) == 0:
		why = in.Host + " names no nameserver"
	default:
		why = fmt.Sprintf("%s names nameservers that pods cannot reach (%s)", in.Host, strings.Join(host.unreachable(), ", "))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by skiff at every start: %s.\n# Set --resolv-conf to give pods a file of your own.\n", why)
	kept := 0
	for _, l := range host.lines {
		if ns, ok := nameserverOf(l); ok {
			if !podReachable(ns) {
				continue
			}
			kept++
		}
		b.WriteString(l + "\n")
	}
	if kept > 0 {
		return ResolvConfChoice{Path: in.Generated, Content: b.Bytes(), Warning: fmt.Sprintf(
			"%s: pods get %s without them; set --resolv-conf to choose their resolvers", why, in.Generated)}, nil
	}
	for _, ip := range in.ClusterDNS {
		fmt.Fprintf(&b, "nameserver %s\n", ip)
	}
	return ResolvConfChoice{Path: in.Generated, Content: b.Bytes(), Warning: fmt.Sprintf(
		"%s: pods with dnsPolicy Default use the cluster DNS (%s), which forwards other names to the servers' resolvers; set --resolv-conf to choose their resolvers",
		why, strings.Join(in.ClusterDNS, ", "))}, nil
}

// CheckResolvConf refuses a --resolv-conf file that cannot be read, before
// anything is written.
func CheckResolvConf(given string) error {
	if given == "" {
		return nil
	}
	if _, err := readResolvConf(given); err != nil {
		return fmt.Errorf("resolv-conf: %w", err)
	}
	return nil
}

// resolvConf is a resolv.conf's meaningful lines, comments dropped.
type resolvConf struct {
	lines       []string
	nameservers []string
}

func readResolvConf(path string) (resolvConf, error) {
	var rc resolvConf
	data, err := os.ReadFile(path)
	if err != nil {
		return rc, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		rc.lines = append(rc.lines, l)
		if ns, ok := nameserverOf(l); ok {
			rc.nameservers = append(rc.nameservers, ns)
		}
	}
	return rc, sc.Err()
}

// nameserverOf returns the address of a nameserver line.
func nameserverOf(line string) (string, bool) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "nameserver" {
		return "", false
	}
	return f[1], true
}

// usable: at least one nameserver, and a pod can reach each of them (the
// resolver tries them in order, so one unreachable first entry costs every
// lookup a timeout).
func (rc resolvConf) usable() bool {
	return len(rc.nameservers) > 0 && len(rc.unreachable()) == 0
}

func (rc resolvConf) unreachable() []string {
	var bad []string
	for _, ns := range rc.nameservers {
		if !podReachable(ns) {
			bad = append(bad, ns)
		}
	}
	return bad
}

// podReachable reports whether a pod can send queries to a nameserver the
// host names. Loopback and unspecified addresses mean the pod itself in its
// own namespace; an IPv6 link-local address needs the host's interface as
// its zone; multicast is no server. IPv4 link-local servers (a cloud's
// 169.254.169.253, node-local DNS caches) are routed from pods through the
// host, so they stay.
func podReachable(ns string) bool {
	ip, err := netip.ParseAddr(ns)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return !ip.IsLoopback() && !ip.IsUnspecified() && !ip.IsMulticast() && !(ip.Is6() && ip.IsLinkLocalUnicast())
}
