package flannel

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flannel-io/flannel/pkg/ip"
	"github.com/flannel-io/flannel/pkg/lease"
	"github.com/flannel-io/flannel/pkg/subnet"
)

func TestNetConf(t *testing.T) {
	for _, tc := range []struct {
		cidr, backend string
		want          map[string]any
	}{
		{"10.42.0.0/16", "vxlan", map[string]any{"Network": "10.42.0.0/16", "EnableIPv4": true, "EnableIPv6": false}},
		{"10.42.0.0/16,fd00:42::/56", "vxlan", map[string]any{"Network": "10.42.0.0/16", "IPv6Network": "fd00:42::/56", "EnableIPv4": true, "EnableIPv6": true}},
		{"10.42.0.0/16, fd00:42::/56", "host-gw", map[string]any{"Network": "10.42.0.0/16", "IPv6Network": "fd00:42::/56", "EnableIPv4": true, "EnableIPv6": true}},
	} {
		data, err := NetConf(tc.cidr, tc.backend)
		if err != nil {
			t.Fatalf("%s: %v", tc.cidr, err)
		}
		var got map[string]any
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v", tc.cidr, k, got[k], v)
			}
		}
		if be, _ := got["Backend"].(map[string]any); be["Type"] != tc.backend {
			t.Errorf("%s: backend %v", tc.cidr, got["Backend"])
		}
		// flannel's own parser reads it as the network we meant.
		cfg, err := subnet.ParseConfig(string(data))
		if err != nil {
			t.Fatalf("%s: flannel refuses %s: %v", tc.cidr, data, err)
		}
		if cfg.EnableIPv6 != strings.Contains(tc.cidr, ":") || (cfg.EnableIPv6 && cfg.IPv6Network.String() != "fd00:42::/56") {
			t.Errorf("%s: flannel reads IPv6 %v %s", tc.cidr, cfg.EnableIPv6, cfg.IPv6Network)
		}
	}
	if _, err := NetConf("10.42.0.0/16,bogus", "vxlan"); err == nil {
		t.Error("bad CIDR accepted")
	}
}

func TestExternalAddrs(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("fd00:db8:5::10")
	iface, opts, err := externalAddrs([]netip.Addr{v4}, true, false)
	if err != nil || iface != "192.0.2.2" || opts.PublicIPv6 != "" || opts.PublicIP != "" {
		t.Errorf("single-stack: %q %+v %v", iface, opts, err)
	}
	iface, opts, err = externalAddrs([]netip.Addr{v4, v6}, true, true)
	if err != nil || iface != "192.0.2.2" || opts.PublicIPv6 != "fd00:db8:5::10" {
		t.Errorf("dual-stack: %q %+v %v", iface, opts, err)
	}
	iface, _, err = externalAddrs([]netip.Addr{v6}, false, true)
	if err != nil || iface != "fd00:db8:5::10" {
		t.Errorf("IPv6-only: %q %v", iface, err)
	}
	if _, _, err := externalAddrs([]netip.Addr{v4}, true, true); err == nil || !strings.Contains(err.Error(), "no IPv6 node IP") {
		t.Errorf("dual-stack network without an IPv6 node IP: %v", err)
	}
	if _, _, err := externalAddrs(nil, true, false); err == nil {
		t.Error("no node IP accepted")
	}
}

// The previous lease's networks feed flannel's rule recycling, which compares
// them with the current ones: a missing IPv6 value must be a zero network,
// never a nil address (the dual-stack crash of issue 12).
func TestReadPrevious(t *testing.T) {
	zero := readPrevious(filepath.Join(t.TempDir(), "missing.env"))
	if zero.network6.IP == nil || zero.subnet6.IP == nil || !zero.network6.Empty() {
		t.Fatalf("missing file: IPv6 networks %+v %+v", zero.network6, zero.subnet6)
	}
	cur := ip.IP6Net{}
	if err := cur.UnmarshalJSON([]byte(`"fd00:42::/56"`)); err != nil {
		t.Fatal(err)
	}
	if cur.Equal(zero.network6) || zero.network6.Equal(cur) {
		t.Error("zero network equals a real one")
	}

	path := filepath.Join(t.TempDir(), "subnet.env")
	content := "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:42::/56\nFLANNEL_IPV6_SUBNET=fd00:42:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	p := readPrevious(path)
	for got, want := range map[string]string{
		p.network.String(): "10.42.0.0/16", p.subnet.String(): "10.42.1.0/24",
		p.network6.String(): "fd00:42::/56", p.subnet6.String(): "fd00:42:0:1::/64",
	} {
		if got != want {
			t.Errorf("read %s, want %s", got, want)
		}
	}
	// A single-stack file leaves the IPv6 ones zero.
	if err := os.WriteFile(path, []byte("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.1.1/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p := readPrevious(path); p.network6.IP == nil || !p.network6.Empty() || p.network.String() != "10.42.0.0/16" {
		t.Errorf("single-stack file: %+v", p)
	}
}

func TestBridgeConfigDualStack(t *testing.T) {
	netCfg, err := subnet.ParseConfig(`{"Network": "10.42.0.0/16", "IPv6Network": "fd00:42::/56", "EnableIPv4": true, "EnableIPv6": true, "Backend": {"Type": "vxlan"}}`)
	if err != nil {
		t.Fatal(err)
	}
	var l lease.Lease
	if err := l.Subnet.UnmarshalJSON([]byte(`"10.42.1.0/24"`)); err != nil {
		t.Fatal(err)
	}
	if err := l.IPv6Subnet.UnmarshalJSON([]byte(`"fd00:42:0:1::/64"`)); err != nil {
		t.Fatal(err)
	}
	b, err := bridgeConfig(netCfg, &l, 1430)
	if err != nil {
		t.Fatal(err)
	}
	if got := prefixes(b.PodCIDRs); got != "10.42.1.0/24,fd00:42:0:1::/64" {
		t.Errorf("pod CIDRs %s", got)
	}
	if got := prefixes(b.ClusterCIDRs); got != "10.42.0.0/16,fd00:42::/56" {
		t.Errorf("cluster CIDRs %s", got)
	}
	if b.MTU != 1430 {
		t.Errorf("MTU %d", b.MTU)
	}
	netCfg.EnableIPv6 = false
	if b, err := bridgeConfig(netCfg, &l, 1450); err != nil || prefixes(b.PodCIDRs) != "10.42.1.0/24" {
		t.Errorf("single-stack: %v %v", b, err)
	}
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
