package controlplane

import (
	"net"
	"strconv"
)

// LocalHost is the address a client on this machine dials to reach a port
// that listens on bindAddress (--bind-address): that address itself when it
// names one (the only address such a listener accepts on, IPv4 or IPv6),
// else 127.0.0.1, which a wildcard listener ("", 0.0.0.0, or ::, which Go
// opens dual-stack) accepts. The result is a bare IP, without brackets.
//
// Every client skiff builds for its own server uses it (the admin
// kubeconfig, the server's own node, and through the kubeconfig `skiff
// kubectl` and `skiff token`), so that none dials an address the server
// does not listen on. bindAddress has been validated as an IP or empty.
func LocalHost(bindAddress string) string {
	if ip := net.ParseIP(bindAddress); ip != nil && !ip.IsUnspecified() {
		return ip.String()
	}
	return "127.0.0.1"
}

// LocalURL is https://LocalHost(bindAddress):port, the supervisor's URL for
// clients on this machine.
func LocalURL(bindAddress string, port int) string {
	return "https://" + net.JoinHostPort(LocalHost(bindAddress), strconv.Itoa(port))
}
