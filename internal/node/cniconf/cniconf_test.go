package cniconf

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestRenderAndWrite(t *testing.T) {
	b := Bridge{
		PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.42.3.1/24")},
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")},
		MTU:          1450,
	}
	data, err := Render(b)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
			MTU    int    `json:"mtu"`
			IPMasq bool   `json:"ipMasq"`
			IPAM   struct {
				Type   string                `json:"type"`
				Ranges [][]map[string]string `json:"ranges"`
				Routes []map[string]string   `json:"routes"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != NetworkName || len(got.Plugins) != 2 || got.Plugins[0].Type != "bridge" || got.Plugins[1].Type != "portmap" {
		t.Fatalf("unexpected conflist: %s", data)
	}
	br := got.Plugins[0]
	if br.Bridge != "cni0" || br.MTU != 1450 || br.IPMasq || br.IPAM.Type != "host-local" {
		t.Errorf("bridge plugin: %+v", br)
	}
	if br.IPAM.Ranges[0][0]["subnet"] != "10.42.3.0/24" {
		t.Errorf("range subnet %q, want the network address 10.42.3.0/24", br.IPAM.Ranges[0][0]["subnet"])
	}
	if br.IPAM.Routes[0]["dst"] != "10.42.0.0/16" {
		t.Errorf("routes %v", br.IPAM.Routes)
	}

	dir := t.TempDir()
	if changed, err := Write(dir, b); err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	st1, _ := os.Stat(filepath.Join(dir, FileName))
	if changed, err := Write(dir, b); err != nil || changed {
		t.Fatalf("same config rewritten: changed=%v err=%v", changed, err)
	}
	b.MTU = 1400
	if changed, err := Write(dir, b); err != nil || !changed {
		t.Fatalf("changed config not written: changed=%v err=%v", changed, err)
	}
	if st1 == nil {
		t.Fatal("file missing")
	}
}

func TestRenderRejectsIncomplete(t *testing.T) {
	if _, err := Render(Bridge{MTU: 1450}); err == nil {
		t.Error("no pod CIDR accepted")
	}
	if _, err := Render(Bridge{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}}); err == nil {
		t.Error("zero MTU accepted")
	}
}

// Dual-stack: one host-local range set per family (each pod gets one
// address of each), IPv4 first, and a route to each cluster network.
func TestRenderDualStack(t *testing.T) {
	data, err := Render(Bridge{
		PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24"), netip.MustParsePrefix("fd00:42:0:1::/64")},
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd00:42::/56")},
		MTU:          1430,
	})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Plugins []struct {
			IsDefaultGateway bool `json:"isDefaultGateway"`
			IPAM             struct {
				Ranges [][]map[string]string `json:"ranges"`
				Routes []map[string]string   `json:"routes"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	ipam := got.Plugins[0].IPAM
	if len(ipam.Ranges) != 2 || len(ipam.Ranges[0]) != 1 || len(ipam.Ranges[1]) != 1 ||
		ipam.Ranges[0][0]["subnet"] != "10.42.1.0/24" || ipam.Ranges[1][0]["subnet"] != "fd00:42:0:1::/64" {
		t.Errorf("ranges %v, want one set per family, IPv4 first", ipam.Ranges)
	}
	if len(ipam.Routes) != 2 || ipam.Routes[0]["dst"] != "10.42.0.0/16" || ipam.Routes[1]["dst"] != "fd00:42::/56" {
		t.Errorf("routes %v", ipam.Routes)
	}
	// The bridge plugin adds a default route per family for the pods.
	if !got.Plugins[0].IsDefaultGateway {
		t.Error("no default gateway")
	}
}
