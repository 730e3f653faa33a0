// Package nodeip settles a node's addresses: --node-ip or the detected
// address, completed in a dual-stack cluster with the other family's address
// of the same interface, and checks that the host can run IPv6 when it must.
package nodeip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/skiffkube/skiff/internal/config"
)

// InterfaceLookup returns the name and addresses of the interface that holds
// ip. Tests replace it.
type InterfaceLookup func(ip netip.Addr) (name string, addrs []netip.Addr, err error)

// Resolve settles the node's addresses, primary family first: --node-ip
// as given (one address, or one per family), else fallback (the advertise or
// detected address). In a dual-stack cluster (clusterCIDR "v4,v6") a node IP
// of the primary family only is completed, as K3s does, with the first global
// address of the other family on the same interface; none there is an error
// naming --node-ip. An empty clusterCIDR (an agent before it has joined)
// checks nothing against the cluster.
func Resolve(given string, fallback net.IP, clusterCIDR string, lookup InterfaceLookup) ([]netip.Addr, error) {
	var ips []netip.Addr
	if given != "" {
		parsed, err := config.ParseIPs(given)
		if err != nil {
			return nil, fmt.Errorf("node-ip: %w", err)
		}
		ips = parsed
	} else {
		ip, ok := netip.AddrFromSlice(fallback)
		if !ok {
			return nil, errors.New("no node IP: set --node-ip")
		}
		ips = []netip.Addr{ip.Unmap()}
	}
	if clusterCIDR == "" {
		return ips, nil
	}
	nets, err := config.ParseCIDRs(clusterCIDR)
	if err != nil {
		return nil, fmt.Errorf("cluster-cidr: %w", err)
	}
	if err := config.CheckNodeIPs(ips, nets); err != nil {
		return nil, err
	}
	if len(ips) == len(nets) {
		return ips, nil
	}
	want6 := nets[1].Addr().Is6()
	name, addrs, err := lookup(ips[0])
	if err != nil {
		return nil, fmt.Errorf("node-ip: finding the interface of %s to pick its dual-stack address: %w; give both with --node-ip", ips[0], err)
	}
	for _, a := range addrs {
		if a = a.Unmap(); a.Is6() == want6 && a.IsGlobalUnicast() {
			return append(ips, a), nil
		}
	}
	other := "IPv6"
	if !want6 {
		other = "IPv4"
	}
	return nil, fmt.Errorf("node-ip: cluster-cidr %s is dual-stack, but interface %s (node IP %s) has no global %s address; add one, or give both families with --node-ip %s,<%s address>", clusterCIDR, name, ips[0], other, ips[0], other)
}

// HostInterfaceOf is the InterfaceLookup of this host: the interface that
// holds ip, and all its addresses.
func HostInterfaceOf(ip netip.Addr) (string, []netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", nil, err
	}
	for _, iface := range ifaces {
		raw, err := iface.Addrs()
		if err != nil {
			continue
		}
		var addrs []netip.Addr
		holds := false
		for _, a := range raw {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			addr, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			addr = addr.Unmap()
			addrs = append(addrs, addr)
			holds = holds || addr == ip
		}
		if holds {
			return iface.Name, addrs, nil
		}
	}
	return "", nil, fmt.Errorf("no interface has address %s", ip)
}

// CheckIPv6Host refuses a dual-stack node on a host whose IPv6 is off, or
// whose kube-proxy mode (iptables) lacks ip6tables: kube-proxy and flannel
// would run IPv4 only and pods' IPv6 traffic would go nowhere. procDir is
// /proc outside tests; hasExecutable looks a tool up on PATH.
func CheckIPv6Host(procDir, proxyMode string, hasExecutable func(string) bool) error {
	data, err := os.ReadFile(procDir + "/sys/net/ipv6/conf/all/disable_ipv6")
	if err != nil {
		return errors.New("dual-stack cluster-cidr, but this kernel has no IPv6 (booted with ipv6.disable=1?)")
	}
	if strings.TrimSpace(string(data)) != "0" {
		return errors.New("dual-stack cluster-cidr, but IPv6 is disabled on this host (net.ipv6.conf.all.disable_ipv6=1): enable it with sysctl -w net.ipv6.conf.all.disable_ipv6=0")
	}
	if proxyMode == "iptables" && !hasExecutable("ip6tables") {
		return errors.New("dual-stack cluster-cidr, but ip6tables is missing (kube-proxy and flannel run in iptables mode): install it (Debian's iptables package ships it)")
	}
	return nil
}
