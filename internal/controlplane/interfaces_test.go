package controlplane

import (
	"net/netip"
	"testing"
)

func TestFirstUsableAddress(t *testing.T) {
	a := netip.MustParseAddr
	lo := hostInterface{name: "lo", up: true, loopback: true, addrs: []netip.Addr{a("127.0.0.1"), a("::1")}}
	tests := []struct {
		name   string
		ifaces []hostInterface
		want   string // "" for none
	}{
		{name: "only loopback", ifaces: []hostInterface{lo}},
		{name: "nothing", ifaces: nil},
		{name: "air-gapped LAN", ifaces: []hostInterface{lo, {name: "eth0", up: true, addrs: []netip.Addr{a("fe80::1"), a("10.1.2.3")}}}, want: "10.1.2.3"},
		{name: "down interface skipped", ifaces: []hostInterface{lo, {name: "eth0", addrs: []netip.Addr{a("10.1.2.3")}}, {name: "eth1", up: true, addrs: []netip.Addr{a("10.9.9.9")}}}, want: "10.9.9.9"},
		{name: "link-local only", ifaces: []hostInterface{lo, {name: "eth0", up: true, addrs: []netip.Addr{a("169.254.3.4"), a("fe80::1")}}}},
		{name: "skiff's own links skipped", ifaces: []hostInterface{
			lo,
			{name: "cni0", up: true, addrs: []netip.Addr{a("10.42.0.1")}},
			{name: "flannel.1", up: true, addrs: []netip.Addr{a("10.42.0.0")}},
			{name: "veth1234", up: true, addrs: []netip.Addr{a("10.42.0.9")}},
			{name: "eth0", up: true, addrs: []netip.Addr{a("192.168.7.2")}},
		}, want: "192.168.7.2"},
		{name: "IPv4 before IPv6", ifaces: []hostInterface{
			{name: "eth0", up: true, addrs: []netip.Addr{a("2001:db8::5")}},
			{name: "eth1", up: true, addrs: []netip.Addr{a("10.0.0.5")}},
		}, want: "10.0.0.5"},
		{name: "IPv6-only", ifaces: []hostInterface{lo, {name: "eth0", up: true, addrs: []netip.Addr{a("fe80::1"), a("2001:db8::5")}}}, want: "2001:db8::5"},
		{name: "mapped IPv4", ifaces: []hostInterface{{name: "eth0", up: true, addrs: []netip.Addr{a("::ffff:10.0.0.7")}}}, want: "10.0.0.7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := firstUsableAddress(tc.ifaces)
			if tc.want == "" {
				if ok {
					t.Errorf("got %s, want none", got)
				}
				return
			}
			if !ok || got.String() != tc.want {
				t.Errorf("got %v (%v), want %s", got, ok, tc.want)
			}
		})
	}
}

// An explicit address wins over detection: --advertise-address, then a
// --bind-address naming one address (the only one the server answers on),
// then the first --node-ip (K3s advertises the node IP).
func TestDetectAdvertiseIPPrefersFlags(t *testing.T) {
	tests := []struct {
		advertise, nodeIP, bind, want string
	}{
		{advertise: "192.0.2.1", nodeIP: "192.0.2.2", bind: "192.0.2.3", want: "192.0.2.1"},
		{nodeIP: "192.0.2.2", bind: "192.0.2.3", want: "192.0.2.3"},
		{nodeIP: "192.0.2.2", bind: "0.0.0.0", want: "192.0.2.2"},
		{nodeIP: "192.0.2.2,2001:db8::2", want: "192.0.2.2"},
		{bind: "192.0.2.3", want: "192.0.2.3"},
	}
	for _, tc := range tests {
		cfg := defaultConfig(t)
		cfg.AdvertiseAddress, cfg.NodeIP, cfg.BindAddress = tc.advertise, tc.nodeIP, tc.bind
		got, err := DetectAdvertiseIP(cfg)
		if err != nil || got.String() != tc.want {
			t.Errorf("%+v: got %v, %v", tc, got, err)
		}
	}
}
