// Package cniconf renders the CNI network configuration of a flannel node.
//
// Upstream flannel ships a CNI plugin that reads flannel's subnet.env at every pod
// start and hands a bridge configuration to the bridge plugin. That plugin is not a
// module we can build here, and everything it computes is known once flannel holds
// its lease, so skiff writes the equivalent bridge configuration itself, once.
package cniconf

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/skiffkube/skiff/internal/atomicfile"
)

// FileName is the conflist skiff owns in the CNI configuration directory. The 10-
// prefix puts it first, which is the one containerd uses.
const FileName = "10-skiff.conflist"

// NetworkName is the CNI network name; host-local keeps its leases under it.
const NetworkName = "cbr0"

// Bridge is what the conflist needs to know.
type Bridge struct {
	// PodCIDRs are this node's pod subnets (one per IP family).
	PodCIDRs []netip.Prefix
	// ClusterCIDRs are the whole pod networks, routed through the bridge.
	ClusterCIDRs []netip.Prefix
	// MTU of pod interfaces: the flannel device's MTU.
	MTU int
}

// Render returns the conflist: a bridge (cni0, gateway and default route for the
// pods, no masquerade: flannel masquerades) with host-local addresses, and portmap
// for hostPort.
func Render(b Bridge) ([]byte, error) {
	if len(b.PodCIDRs) == 0 {
		return nil, fmt.Errorf("no pod CIDR")
	}
	if b.MTU <= 0 {
		return nil, fmt.Errorf("invalid MTU %d", b.MTU)
	}
	type rng struct {
		Subnet string `json:"subnet"`
	}
	type route struct {
		Dst string `json:"dst"`
	}
	var ranges [][]rng
	for _, p := range b.PodCIDRs {
		ranges = append(ranges, []rng{{Subnet: p.Masked().String()}})
	}
	var routes []route
	for _, c := range b.ClusterCIDRs {
		routes = append(routes, route{Dst: c.Masked().String()})
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       NetworkName,
		"plugins": []any{
			map[string]any{
				"type":             "bridge",
				"bridge":           "cni0",
				"isGateway":        true,
				"isDefaultGateway": true,
				"forceAddress":     true,
				"hairpinMode":      true,
				"ipMasq":           false,
				"mtu":              b.MTU,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": ranges,
					"routes": routes,
				},
			},
			map[string]any{
				"type":         "portmap",
				"snat":         true,
				"capabilities": map[string]bool{"portMappings": true},
			},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// Write renders the conflist into dir, rewriting it only when it changed (containerd
// reloads the directory on every change).
func Write(dir string, b Bridge) (changed bool, err error) {
	data, err := Render(b)
	if err != nil {
		return false, fmt.Errorf("rendering CNI config: %w", err)
	}
	path := filepath.Join(dir, FileName)
	if cur, err := os.ReadFile(path); err == nil && string(cur) == string(data) {
		return false, nil
	}
	if err := atomicfile.Write(path, data, 0o644, 0o755); err != nil {
		return false, fmt.Errorf("writing CNI config %s: %w", path, err)
	}
	return true, nil
}
