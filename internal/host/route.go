package host

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
)

// ServiceRouteProtocol marks, in the kernel's route protocol field, the
// routes skiff adds for the service network, so that they can be told from
// anyone else's (`ip route show proto 165`) and removed by killall.
const ServiceRouteProtocol = 165

// ServiceRoute is the route EnsureServiceRoutes adds for cidr: onto the
// interface (linkIndex) that holds nodeIP, with nodeIP as the source address.
// Nothing answers on the service network itself; the route only lets a host
// process's connection to a ClusterIP leave the routing decision, after which
// kube-proxy's rules rewrite it to an endpoint.
func ServiceRoute(cidr netip.Prefix, nodeIP netip.Addr, linkIndex int) netlink.Route {
	return netlink.Route{
		LinkIndex: linkIndex,
		Dst:       &net.IPNet{IP: cidr.Masked().Addr().AsSlice(), Mask: net.CIDRMask(cidr.Bits(), cidr.Addr().BitLen())},
		Src:       nodeIP.AsSlice(),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  ServiceRouteProtocol,
	}
}

// EnsureServiceRoutes makes each service CIDR routable from the host. Usually
// the default route covers it; on a host without one (an air-gapped network)
// a host process's connection to a ClusterIP would fail with "network is
// unreachable" before kube-proxy's rules could rewrite it, so a route for the
// CIDR is added through the interface that holds the node IP of its family,
// as kube-proxy users do by hand. It is idempotent: a CIDR that already has a
// route (skiff's from an earlier start included) is left alone.
func EnsureServiceRoutes(serviceCIDRs []netip.Prefix, nodeIPs []netip.Addr, log *slog.Logger) error {
	for _, cidr := range serviceCIDRs {
		// The kubernetes Service's address, the first of the CIDR.
		probe := cidr.Masked().Addr().Next()
		routes, err := netlink.RouteGet(probe.AsSlice())
		if err == nil && len(routes) > 0 {
			continue
		}
		if !errors.Is(err, syscall.ENETUNREACH) {
			// Not the case this is for; leave the host's routing alone.
			log.Debug("looking up the route to the service network", "cidr", cidr.String(), "err", err)
			continue
		}
		nodeIP, ok := sameFamily(nodeIPs, cidr.Addr())
		if !ok {
			continue
		}
		link, err := linkWithAddress(nodeIP)
		if err != nil {
			return fmt.Errorf("routing service-cidr %s: %w", cidr, err)
		}
		route := ServiceRoute(cidr, nodeIP, link.Attrs().Index)
		if err := netlink.RouteReplace(&route); err != nil {
			return fmt.Errorf("adding a route for service-cidr %s via %s: %w", cidr, link.Attrs().Name, err)
		}
		log.Info("no route to the service network: added one through the node's interface", "cidr", cidr.String(), "dev", link.Attrs().Name)
	}
	return nil
}

func sameFamily(ips []netip.Addr, like netip.Addr) (netip.Addr, bool) {
	for _, ip := range ips {
		if ip.Unmap().Is4() == like.Unmap().Is4() {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// linkWithAddress finds the interface that holds ip.
func linkWithAddress(ip netip.Addr) (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface holds the node IP %s", ip)
}
