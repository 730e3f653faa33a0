package controlplane

import (
	"net"
	"net/netip"
	"strings"
)

// hostInterface is what address detection needs to know of a network
// interface; tests build these by hand.
type hostInterface struct {
	name         string
	up, loopback bool
	addrs        []netip.Addr
}

// ownLink reports an interface skiff's node creates itself: its addresses
// are the pod network's (cni0 holds the node's first pod address), not an
// address other machines reach this one on.
func ownLink(name string) bool {
	return name == "cni0" || strings.HasPrefix(name, "flannel") || strings.HasPrefix(name, "veth")
}

// firstUsableAddress picks, in the kernel's interface order, the first
// global unicast address (not loopback, not link-local) of an interface that
// is up and that skiff did not create, IPv4 before IPv6. It is the fallback
// for a host without a default route (an air-gapped network); ok is false
// when there is none.
func firstUsableAddress(ifaces []hostInterface) (addr netip.Addr, ok bool) {
	var v6 netip.Addr
	for _, ifc := range ifaces {
		if !ifc.up || ifc.loopback || ownLink(ifc.name) {
			continue
		}
		for _, a := range ifc.addrs {
			a = a.Unmap()
			if !a.IsGlobalUnicast() {
				continue
			}
			if a.Is4() {
				return a, true
			}
			if !v6.IsValid() {
				v6 = a
			}
		}
	}
	return v6, v6.IsValid()
}

// listInterfaces reads the host's interfaces and their addresses.
func listInterfaces() ([]hostInterface, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]hostInterface, 0, len(ifaces))
	for _, ifc := range ifaces {
		h := hostInterface{name: ifc.Name, up: ifc.Flags&net.FlagUp != 0, loopback: ifc.Flags&net.FlagLoopback != 0}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					h.addrs = append(h.addrs, ip.Unmap())
				}
			}
		}
		out = append(out, h)
	}
	return out, nil
}
