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
