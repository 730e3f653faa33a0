package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Dual-stack, as in K3s: --cluster-cidr, --service-cidr and --node-ip each
// take one value, or one IPv4 and one IPv6 value separated by a comma. The
// three must agree: the same families in the same order (the first is the
// primary family, the one the kubernetes Service and the cluster DNS use),
// except that --node-ip may name the primary family only, the other family's
// address then being detected on the same interface.
//
// skiff supports IPv4 single-stack and IPv4-primary dual-stack. IPv6-only
// and IPv6-primary clusters are refused: the advertise address, the
// kubernetes endpoints and the cluster DNS are IPv4 throughout.

// Default node pod-CIDR sizes, as kube-controller-manager's (and K3s's)
// --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6.
const (
	DefaultNodeMaskIPv4 = 24
	DefaultNodeMaskIPv6 = 64
)

// maxNodeMaskDiffIPv6 is how many bits the controller-manager's IPv6 pod CIDR
// allocator allows between the cluster CIDR and a node's (its bitmap size).
const maxNodeMaskDiffIPv6 = 16

// family names an address's IP family the way messages show it.
func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// ParseIPs parses --node-ip: one address, or two of different families
// separated by a comma ("192.0.2.2,2001:db8::2"). IPv4-mapped IPv6 addresses
// count as IPv4.
func ParseIPs(s string) ([]netip.Addr, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("must not be empty")
	}
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%q: want one IP address or an IPv4,IPv6 pair", s)
	}
	var ips []netip.Addr
	for _, p := range parts {
		p = strings.TrimSpace(p)
		ip, err := netip.ParseAddr(p)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("invalid IP address %q", p)
		}
		ip = ip.Unmap()
		if ip.IsUnspecified() || ip.IsMulticast() {
			return nil, fmt.Errorf("%s is not a unicast address", ip)
		}
		ips = append(ips, ip)
	}
	if len(ips) == 2 && ips[0].Is4() == ips[1].Is4() {
		return nil, fmt.Errorf("%q: a dual-stack pair needs one IPv4 and one IPv6 address", s)
	}
	return ips, nil
}

// JoinIPs is the flag form of ips: comma-separated, in order.
func JoinIPs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}

// IsDualStack reports whether a valid --cluster-cidr value names two
// families.
func IsDualStack(clusterCIDR string) bool {
	nets, err := ParseCIDRs(clusterCIDR)
	return err == nil && len(nets) == 2
}

// checkStack checks that --cluster-cidr and --service-cidr (both parsed)
// name the same families in the same order, with IPv4 first.
func checkStack(clusterNets, serviceNets []netip.Prefix) error {
	for _, f := range []struct {
		flag string
		nets []netip.Prefix
	}{{"cluster-cidr", clusterNets}, {"service-cidr", serviceNets}} {
		if f.nets[0].Addr().Is6() {
			return fieldError(f.flag, "%s: IPv6-only and IPv6-first clusters are not supported; use an IPv4 CIDR, or an IPv4,IPv6 pair for dual-stack", joinPrefixes(f.nets))
		}
	}
	if len(clusterNets) != len(serviceNets) {
		return fieldError("service-cidr", "%s and cluster-cidr %s must both be single-stack or both dual-stack (IPv4,IPv6)", joinPrefixes(serviceNets), joinPrefixes(clusterNets))
	}
	return nil
}

// CheckNodeIPs checks --node-ip (parsed) against the cluster CIDRs: the first
// address must be of the cluster's primary family; a second one is allowed
// only in a dual-stack cluster and must be of its other family. On an agent,
// whose cluster CIDRs come from the server, this runs after the join.
func CheckNodeIPs(ips []netip.Addr, clusterNets []netip.Prefix) error {
	if len(ips) == 0 || len(clusterNets) == 0 {
		return nil
	}
	if len(ips) > len(clusterNets) {
		return fieldError("node-ip", "%s is dual-stack but cluster-cidr %s is single-stack; give one %s address", JoinIPs(ips), joinPrefixes(clusterNets), family(clusterNets[0].Addr()))
	}
	for i, ip := range ips {
		if want := clusterNets[i].Addr(); ip.Is4() != want.Is4() {
			return fieldError("node-ip", "%s: address %d is %s but cluster-cidr %s lists %s there; list node-ip's families in cluster-cidr's order", JoinIPs(ips), i+1, family(ip), joinPrefixes(clusterNets), family(want))
		}
	}
	return nil
}

// checkNodeMasks checks that the controller-manager can cut every cluster
// CIDR into node pod CIDRs of the configured size: a node CIDR no larger than
// the cluster CIDR, and for IPv6 at most 16 bits smaller. Upstream otherwise
// fails (or panics) when it starts its node IPAM controller. Sizes come from
// --kube-controller-manager-arg when given there.
func checkNodeMasks(clusterNets []netip.Prefix, kcmArgs []string) []error {
	masks := map[bool]int{true: DefaultNodeMaskIPv4, false: DefaultNodeMaskIPv6} // keyed by Is4
	keys := map[bool]string{true: "node-cidr-mask-size-ipv4", false: "node-cidr-mask-size-ipv6"}
	if len(clusterNets) == 1 {
		// Single-stack: --node-cidr-mask-size applies to the one family.
		keys[clusterNets[0].Addr().Is4()] = "node-cidr-mask-size"
	}
	var errs []error
	for _, n := range clusterNets {
		is4 := n.Addr().Is4()
		mask, flag := masks[is4], "the default node CIDR size"
		if v, ok := argValue(kcmArgs, keys[is4]); ok {
			m, err := strconv.Atoi(v)
			if err != nil {
				continue // the controller-manager's own flag parsing reports it
			}
			mask, flag = m, "kube-controller-manager-arg "+keys[is4]
		}
		switch {
		case mask < n.Bits():
			errs = append(errs, fieldError("cluster-cidr", "%s is smaller than a node's pod CIDR (/%d, %s); use a /%d or larger", n, mask, flag, mask))
		case mask > n.Addr().BitLen():
			errs = append(errs, fieldError("kube-controller-manager-arg", "%s=%d is not a valid %s prefix length", keys[is4], mask, family(n.Addr())))
		case !is4 && mask-n.Bits() > maxNodeMaskDiffIPv6:
			errs = append(errs, fieldError("cluster-cidr", "%s is too large for node pod CIDRs of /%d (%s): the controller-manager allows at most %d bits between them; use a /%d to /%d", n, mask, flag, maxNodeMaskDiffIPv6, mask-maxNodeMaskDiffIPv6, mask))
		}
	}
	return errs
}

// argValue is the value of key in key=value component arguments, the last
// one winning as on a command line.
func argValue(args []string, key string) (string, bool) {
	v, found := "", false
	for _, a := range args {
		k, val, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if k == key {
			v, found = val, true
		}
	}
	return v, found
}

// trimList drops the blanks around the entries of a comma-separated value
// ("10.42.0.0/16, fd00:42::/56"), which components' flags would refuse.
func trimList(s string) string {
	if !strings.Contains(s, ",") {
		return strings.TrimSpace(s)
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return strings.Join(parts, ",")
}
