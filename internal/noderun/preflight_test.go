package noderun

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckFlannelIface(t *testing.T) {
	hostIfaces := map[string][]netip.Addr{
		"eth1":   {netip.MustParseAddr("192.168.56.10"), netip.MustParseAddr("fe80::1")},
		"eth2":   {netip.MustParseAddr("2001:db8::10")},
		"dummy0": nil,
	}
	addrs := func(name string) ([]netip.Addr, error) {
		a, ok := hostIfaces[name]
		if !ok {
			return nil, errNoInterface
		}
		return a, nil
	}
	for _, tc := range []struct {
		iface   string
		v4, v6  bool
		wantErr string
	}{
		{iface: "eth1", v4: true},
		{iface: "eth1"},
		{iface: "eth2", v6: true},
		{iface: "eth9", v4: true, wantErr: `flannel-iface: no interface "eth9"`},
		{iface: "eth1", v6: true, wantErr: "eth1 has no IPv6 address (other than link-local)"},
		{iface: "eth1", v4: true, v6: true, wantErr: "eth1 has no IPv6"},
		{iface: "eth2", v4: true, wantErr: "eth2 has no IPv4 address"},
		{iface: "dummy0", wantErr: "dummy0 has no address"},
	} {
		err := CheckFlannelIface(tc.iface, tc.v4, tc.v6, addrs)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s v4=%v v6=%v: %v, want %q", tc.iface, tc.v4, tc.v6, err, tc.wantErr)
		}
	}
}

func TestFamilies(t *testing.T) {
	for _, tc := range []struct {
		nodeIP, cidr string
		v4, v6       bool
	}{
		{"", "10.42.0.0/16", true, false},
		{"192.0.2.1", "10.42.0.0/16,fd00:42::/56", true, true},
		{"192.0.2.1", "", true, false},
		{"fd00::1", "", false, true},
		{"", "", false, false},
	} {
		v4, v6, err := families(tc.nodeIP, tc.cidr)
		if err != nil || v4 != tc.v4 || v6 != tc.v6 {
			t.Errorf("families(%q, %q) = %v %v %v", tc.nodeIP, tc.cidr, v4, v6, err)
		}
	}
}

// The real host's loopback has an address; a made-up name is refused.
func TestPreflightFlannelIfaceOnHost(t *testing.T) {
	if err := CheckFlannelIface("lo", true, false, ifaceAddrs); err != nil {
		t.Errorf("lo: %v", err)
	}
	if err := CheckFlannelIface("skiff-nope0", true, false, ifaceAddrs); err == nil || !strings.Contains(err.Error(), `no interface "skiff-nope0"`) {
		t.Errorf("missing interface: %v", err)
	}
}
