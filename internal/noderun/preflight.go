package noderun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/host"
)

// Preflight refuses, with one line naming the flag, the node options the
// host contradicts, before anything is written: --protect-kernel-defaults
// with a kernel setting that differs from the kubelet's, and a
// --flannel-iface that does not exist or has no address of a family the
// pod network needs. clusterCIDR is the cluster's pod network when known
// (a server); an agent, which learns it at its join, passes "" and the
// node IPs' families are checked instead (Plan.SetCluster checks the
// cluster's).
func Preflight(cfg config.Node, clusterCIDR string) error {
	if cfg.ProtectKernelDefaults {
		if err := host.CheckKernelDefaults(); err != nil {
			return err
		}
	}
	if cfg.FlannelIface == "" {
		return nil
	}
	v4, v6, err := families(cfg.NodeIP, clusterCIDR)
	if err != nil {
		return err
	}
	return CheckFlannelIface(cfg.FlannelIface, v4, v6, ifaceAddrs)
}

// families are the address families the pod network carries: the cluster
// CIDR's when known, else the node IPs' (none when neither is set).
func families(nodeIP, clusterCIDR string) (v4, v6 bool, err error) {
	if clusterCIDR != "" {
		cidrs, err := config.ParseCIDRs(clusterCIDR)
		if err != nil {
			return false, false, fmt.Errorf("cluster CIDR: %w", err)
		}
		for _, c := range cidrs {
			v4, v6 = v4 || c.Addr().Is4(), v6 || c.Addr().Is6()
		}
		return v4, v6, nil
	}
	if nodeIP != "" {
		ips, err := config.ParseIPs(nodeIP)
		if err != nil {
			return false, false, err
		}
		for _, ip := range ips {
			v4, v6 = v4 || ip.Is4(), v6 || ip.Is6()
		}
	}
	return v4, v6, nil
}

// errNoInterface is ifaceAddrs' error for a name no interface has.
var errNoInterface = errors.New("no such interface")

// ifaceAddrs lists the addresses of the interface called name.
func ifaceAddrs(name string) ([]netip.Addr, error) {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return nil, errNoInterface
	}
	addrs, err := iface.Addrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// CheckFlannelIface refuses an interface that addrs (ifaceAddrs on the
// host) does not find, or that lacks an address of a needed family: IPv4
// when v4, a non-link-local IPv6 when v6, any address when neither is
// known yet.
func CheckFlannelIface(name string, v4, v6 bool, addrs func(string) ([]netip.Addr, error)) error {
	list, err := addrs(name)
	if errors.Is(err, errNoInterface) {
		return fmt.Errorf("flannel-iface: no interface %q on this host", name)
	}
	if err != nil {
		return fmt.Errorf("flannel-iface: reading the addresses of %s: %w", name, err)
	}
	var has4, has6 bool
	for _, a := range list {
		has4 = has4 || a.Is4()
		has6 = has6 || a.Is6() && !a.IsLinkLocalUnicast()
	}
	switch {
	case v4 && !has4:
		return fmt.Errorf("flannel-iface: interface %s has no IPv4 address, and the pod network is IPv4", name)
	case v6 && !has6:
		return fmt.Errorf("flannel-iface: interface %s has no IPv6 address (other than link-local), and the pod network is IPv6", name)
	case !has4 && !has6:
		return fmt.Errorf("flannel-iface: interface %s has no address", name)
	}
	return nil
}
