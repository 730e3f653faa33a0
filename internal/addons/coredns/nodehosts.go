package coredns

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffkube/skiff/internal/atomicfile"
)

// nodeHosts keeps the hosts file that CoreDNS's hosts plugin serves: every
// node's name with its InternalIPs (both families on a dual-stack node), as
// K3s's NodeHosts does, so that pods resolve node names. The file is
// rewritten when a node joins, leaves or changes address; the plugin reads
// it again within a second.
type nodeHosts struct {
	path   string
	domain string
	log    *slog.Logger

	mu      sync.Mutex
	byNode  map[string][]netip.Addr
	written string
}

func newNodeHosts(path, domain string, log *slog.Logger) *nodeHosts {
	return &nodeHosts{path: path, domain: strings.ToLower(strings.TrimSuffix(domain, ".")), log: log, byNode: map[string][]netip.Addr{}}
}

// setNode records a node's InternalIPs (nil forgets the node) and rewrites
// the file when its content changes.
func (h *nodeHosts) setNode(name string, n *corev1.Node) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n == nil {
		delete(h.byNode, name)
	} else if h.serves(name) {
		h.byNode[name] = internalIPs(n)
	}
	if err := h.writeLocked(); err != nil {
		h.log.Warn("node names may resolve to old addresses", "file", h.path, "err", err)
	}
}

// serves reports whether a node's name may be answered from the hosts file.
// A name inside the cluster domain or a reverse zone would shadow what the
// kubernetes plugin answers there; such a node is left out.
func (h *nodeHosts) serves(name string) bool {
	name = strings.ToLower(name)
	for _, zone := range []string{h.domain, "in-addr.arpa", "ip6.arpa"} {
		if name == zone || strings.HasSuffix(name, "."+zone) {
			h.log.Debug("node name not served by cluster DNS: it is inside a zone the cluster answers", "node", name, "zone", zone)
			return false
		}
	}
	return true
}

// write writes the current file (also before any node is known, so that
// the hosts plugin finds it at start).
func (h *nodeHosts) write() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.writeLocked()
}

func (h *nodeHosts) writeLocked() error {
	content := renderHosts(h.byNode)
	if content == h.written {
		return nil
	}
	if err := atomicfile.Write(h.path, []byte(content), 0o644, 0o700); err != nil {
		return fmt.Errorf("writing node hosts: %w", err)
	}
	h.written = content
	return nil
}

// renderHosts is the hosts file for the nodes: a header, then one "IP name"
// line per address, by node name.
func renderHosts(byNode map[string][]netip.Addr) string {
	var b strings.Builder
	b.WriteString("# Written by skiff: the cluster's node names for CoreDNS. Changes are overwritten.\n")
	names := make([]string, 0, len(byNode))
	for name := range byNode {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, ip := range byNode[name] {
			fmt.Fprintf(&b, "%s %s\n", ip, name)
		}
	}
	return b.String()
}

// internalIPs are a node's InternalIP addresses, IPv4 first. K3s answers
// with these only: an ExternalIP is how the outside reaches the node, not
// how pods do.
func internalIPs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		if ip = ip.Unmap(); !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	slices.SortStableFunc(out, func(a, b netip.Addr) int {
		switch {
		case a.Is4() == b.Is4():
			return 0
		case a.Is4():
			return -1
		}
		return 1
	})
	return out
}
