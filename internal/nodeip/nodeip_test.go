package nodeip

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiffkube/skiff/internal/config"
)

// fakeInterfaces is a host with eth0 (IPv4, link-local and global IPv6) and
// eth1 (IPv4 only).
func fakeInterfaces(ip netip.Addr) (string, []netip.Addr, error) {
	ifaces := map[string][]netip.Addr{
		"eth0": {netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("fe80::1"), netip.MustParseAddr("fd00:db8:5::10"), netip.MustParseAddr("fd00:db8:5::11")},
		"eth1": {netip.MustParseAddr("198.51.100.7")},
	}
	for name, addrs := range ifaces {
		for _, a := range addrs {
			if a == ip {
				return name, addrs, nil
			}
		}
	}
	return "", nil, errors.New("no interface has it")
}

func TestResolve(t *testing.T) {
	const single, dual = "10.42.0.0/16", "10.42.0.0/16,fd00:42::/56"
	for _, tc := range []struct {
		name, given, fallback, cluster string
		want, wantErr                  string
	}{
		{name: "single-stack, given", given: "192.0.2.2", cluster: single, want: "192.0.2.2"},
		{name: "single-stack, advertise address", fallback: "198.51.100.7", cluster: single, want: "198.51.100.7"},
		{name: "agent before the join", given: "192.0.2.2,fd00:db8:5::10", want: "192.0.2.2,fd00:db8:5::10"},
		{name: "dual-stack, both given", given: "192.0.2.2,fd00:db8:5::99", cluster: dual, want: "192.0.2.2,fd00:db8:5::99"},
		{name: "dual-stack, IPv6 of the same interface, not link-local", given: "192.0.2.2", cluster: dual, want: "192.0.2.2,fd00:db8:5::10"},
		{name: "dual-stack, from the advertise address", fallback: "192.0.2.2", cluster: dual, want: "192.0.2.2,fd00:db8:5::10"},
		{name: "dual-stack, interface without IPv6", given: "198.51.100.7", cluster: dual,
			wantErr: "node-ip: cluster-cidr 10.42.0.0/16,fd00:42::/56 is dual-stack, but interface eth1 (node IP 198.51.100.7) has no global IPv6 address; add one, or give both families with --node-ip 198.51.100.7,<IPv6 address>"},
		{name: "dual-stack, address on no interface", given: "203.0.113.9", cluster: dual, wantErr: "node-ip: finding the interface of 203.0.113.9"},
		{name: "dual node IP, single-stack cluster", given: "192.0.2.2,fd00:db8:5::10", cluster: single, wantErr: "node-ip: 192.0.2.2,fd00:db8:5::10 is dual-stack but cluster-cidr 10.42.0.0/16 is single-stack"},
		{name: "IPv6 first", given: "fd00:db8:5::10,192.0.2.2", cluster: dual, wantErr: "node-ip: fd00:db8:5::10,192.0.2.2: address 1 is IPv6"},
		{name: "bad node IP", given: "192.0.2.2,x", cluster: dual, wantErr: `node-ip: invalid IP address "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(tc.given, net.ParseIP(tc.fallback), tc.cluster, fakeInterfaces)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := config.JoinIPs(got); s != tc.want {
				t.Errorf("got %s, want %s", s, tc.want)
			}
		})
	}
}

func TestHostInterfaceOfLoopback(t *testing.T) {
	name, addrs, err := HostInterfaceOf(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Skipf("no loopback interface here: %v", err)
	}
	if name == "" || len(addrs) == 0 {
		t.Errorf("got %q %v", name, addrs)
	}
	if _, _, err := HostInterfaceOf(netip.MustParseAddr("192.0.2.254")); err == nil {
		t.Error("an address no interface holds was found")
	}
}

func TestCheckIPv6Host(t *testing.T) {
	proc := func(t *testing.T, disabled string) string {
		dir := t.TempDir()
		if disabled != "" {
			p := filepath.Join(dir, "sys/net/ipv6/conf/all")
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(p, "disable_ipv6"), []byte(disabled+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	with := func(string) bool { return true }
	without := func(name string) bool { return name != "ip6tables" }
	if err := CheckIPv6Host(proc(t, "0"), "iptables", with); err != nil {
		t.Errorf("IPv6 on, ip6tables there: %v", err)
	}
	if err := CheckIPv6Host(proc(t, "0"), "nftables", without); err != nil {
		t.Errorf("nftables mode needs no ip6tables: %v", err)
	}
	for _, tc := range []struct{ disabled, mode, want string }{
		{"1", "iptables", "net.ipv6.conf.all.disable_ipv6=1"},
		{"", "iptables", "no IPv6"},
		{"0", "iptables", "ip6tables is missing"},
	} {
		if err := CheckIPv6Host(proc(t, tc.disabled), tc.mode, without); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("disable_ipv6=%q mode %s: got %v, want %q", tc.disabled, tc.mode, err, tc.want)
		}
	}
}
