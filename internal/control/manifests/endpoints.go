package manifests

import (
	"fmt"
	"net"
	"strings"
)

// SlicePort is one port of ServerEndpointSlice.
type SlicePort struct {
	Name, Protocol string
	Port           int
}

// ServerEndpointSlice is the EndpointSlice document that points a
// selectorless Service at an add-on served by the server process itself
// (CoreDNS, metrics-server): one ready endpoint at ip.
func ServerEndpointSlice(namespace, service string, ip net.IP, ports ...SlicePort) string {
	family := "IPv4"
	if ip.To4() == nil {
		family = "IPv6"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %s-skiff
  namespace: %s
  labels:
    kubernetes.io/service-name: %s
    endpointslice.kubernetes.io/managed-by: skiff.io
addressType: %s
endpoints:
- addresses: ["%s"]
  conditions: {ready: true}
ports:
`, service, namespace, service, family, ip)
	for _, p := range ports {
		fmt.Fprintf(&b, "- {name: %s, port: %d, protocol: %s}\n", p.Name, p.Port, p.Protocol)
	}
	return b.String()
}
