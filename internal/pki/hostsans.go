package pki

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
)

// HostSANs returns the names and addresses clients may use to reach this host:
// its hostname, the IPs of all its interfaces except loopback and link-local
// IPv6 (which needs a zone to be usable), plus localhost, 127.0.0.1 and ::1.
// It is meant for the apiserver serving certificate. The result is sorted so
// that it is stable across calls.
func HostSANs() (dns []string, ips []net.IP, err error) {
	dns = []string{"localhost"}
	hostname, err := os.Hostname()
	if err != nil {
		return nil, nil, fmt.Errorf("reading hostname: %w", err)
	}
	if h := strings.ToLower(hostname); h != "" && h != "localhost" {
		dns = append(dns, h)
	}

	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, nil, fmt.Errorf("listing interface addresses: %w", err)
	}
	seen := map[string]bool{}
	add := func(ip net.IP) {
		if !seen[ip.String()] {
			seen[ip.String()] = true
			ips = append(ips, ip)
		}
	}
	add(net.ParseIP("127.0.0.1").To4())
	add(net.IPv6loopback)
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip := ipnet.IP
		if ip.IsLoopback() || (ip.To4() == nil && ip.IsLinkLocalUnicast()) {
			continue
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		add(ip)
	}

	slices.Sort(dns)
	slices.SortFunc(ips, func(a, b net.IP) int { return strings.Compare(string(a.To16()), string(b.To16())) })
	return dns, ips, nil
}
