package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseIPs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // JoinIPs of the result
		wantErr string
	}{
		{in: "192.0.2.2", want: "192.0.2.2"},
		{in: "192.0.2.2,fd00:db8:5::10", want: "192.0.2.2,fd00:db8:5::10"},
		{in: " 192.0.2.2 , fd00:db8:5::10 ", want: "192.0.2.2,fd00:db8:5::10"},
		{in: "fd00:db8:5::10,192.0.2.2", want: "fd00:db8:5::10,192.0.2.2"}, // order is checked against the CIDRs
		{in: "::ffff:192.0.2.2", want: "192.0.2.2"},
		{in: "fd00::1", want: "fd00::1"},
		{in: "", wantErr: "must not be empty"},
		{in: "192.0.2.2,", wantErr: `invalid IP address ""`},
		{in: "192.0.2.2,192.0.2.3", wantErr: "one IPv4 and one IPv6"},
		{in: "fd00::1,fd00::2", wantErr: "one IPv4 and one IPv6"},
		{in: "192.0.2.2,fd00::1,10.0.0.1", wantErr: "want one IP address or an IPv4,IPv6 pair"},
		{in: "192.0.2.256", wantErr: `invalid IP address "192.0.2.256"`},
		{in: "fe80::1%eth0", wantErr: "invalid IP address"},
		{in: "192.0.2.0/24", wantErr: "invalid IP address"},
		{in: "0.0.0.0", wantErr: "not a unicast address"},
		{in: "::", wantErr: "not a unicast address"},
		{in: "224.0.0.1", wantErr: "not a unicast address"},
	} {
		got, err := ParseIPs(tc.in)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseIPs(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("ParseIPs(%q): %v", tc.in, err)
		case JoinIPs(got) != tc.want:
			t.Errorf("ParseIPs(%q) = %s, want %s", tc.in, JoinIPs(got), tc.want)
		}
	}
}

func TestParseCIDRsKeepsOrderAndFamilies(t *testing.T) {
	nets, err := ParseCIDRs(" 10.42.0.0/16 , fd00:42::/56")
	if err != nil || joinPrefixes(nets) != "10.42.0.0/16,fd00:42::/56" {
		t.Fatalf("got %v, %v", nets, err)
	}
	for _, bad := range []string{"10.42.0.0/16,10.44.0.0/16", "fd00:42::/56,fd00:44::/56", "10.42.0.0/16,fd00:42::/56,10.44.0.0/16", "10.42.0.0/16,", "10.42.0.0"} {
		if _, err := ParseCIDRs(bad); err == nil {
			t.Errorf("ParseCIDRs(%q) accepted", bad)
		}
	}
}

func TestCheckNodeIPs(t *testing.T) {
	single := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}
	dual := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd00:42::/56")}
	ips := func(s string) []netip.Addr {
		v, err := ParseIPs(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		nodeIP  string
		nets    []netip.Prefix
		wantErr string
	}{
		{"192.0.2.2", single, ""},
		{"192.0.2.2", dual, ""}, // the IPv6 one is detected
		{"192.0.2.2,fd00:db8:5::10", dual, ""},
		{"192.0.2.2,fd00:db8:5::10", single, "node-ip: 192.0.2.2,fd00:db8:5::10 is dual-stack but cluster-cidr 10.42.0.0/16 is single-stack"},
		{"fd00:db8:5::10", single, "node-ip: fd00:db8:5::10: address 1 is IPv6 but cluster-cidr 10.42.0.0/16 lists IPv4 there"},
		{"fd00:db8:5::10,192.0.2.2", dual, "address 1 is IPv6 but cluster-cidr 10.42.0.0/16,fd00:42::/56 lists IPv4 there"},
		{"fd00:db8:5::10", dual, "address 1 is IPv6"},
	} {
		err := CheckNodeIPs(ips(tc.nodeIP), tc.nets)
		if tc.wantErr == "" && err != nil {
			t.Errorf("node-ip %s with %s: %v", tc.nodeIP, joinPrefixes(tc.nets), err)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("node-ip %s with %s: got %v, want %q", tc.nodeIP, joinPrefixes(tc.nets), err, tc.wantErr)
		}
	}
}

// Each family rule of the server's flags, with a one-line error naming the
// flags and the values.
func TestValidateDualStack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		set     func(s *Server)
		wantErr []string // every error, in order, by substring
	}{
		{"dual-stack", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR, s.NodeIP = "10.42.0.0/16,fd00:42::/56", "10.43.0.0/16,fd00:43::/112", "192.0.2.2,fd00:db8:5::10"
		}, nil},
		{"dual-stack, node IP detected", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR = "10.42.0.0/16,fd00:42::/56", "10.43.0.0/16,fd00:43::/112"
		}, nil},
		{"dual-stack cluster DNS", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR, s.ClusterDNS = "10.42.0.0/16,fd00:42::/56", "10.43.0.0/16,fd00:43::/112", "10.43.0.10,fd00:43::a"
		}, nil},
		{"dual-stack with node mask sizes given", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR = "10.42.0.0/16,fd00:42::/40", "10.43.0.0/16,fd00:43::/112"
			s.KubeControllerManagerArgs = []string{"node-cidr-mask-size-ipv6=56"}
		}, nil},
		{"single-stack cluster, dual node IP", func(s *Server) { s.NodeIP = "192.0.2.2,fd00:db8:5::10" },
			[]string{"node-ip: 192.0.2.2,fd00:db8:5::10 is dual-stack but cluster-cidr 10.42.0.0/16 is single-stack"}},
		{"dual cluster CIDR, single service CIDR", func(s *Server) { s.ClusterCIDR = "10.42.0.0/16,fd00:42::/56" },
			[]string{"service-cidr: 10.43.0.0/16 and cluster-cidr 10.42.0.0/16,fd00:42::/56 must both be single-stack or both dual-stack"}},
		{"single cluster CIDR, dual service CIDR", func(s *Server) { s.ServiceCIDR = "10.43.0.0/16,fd00:43::/112" },
			[]string{"service-cidr: 10.43.0.0/16,fd00:43::/112 and cluster-cidr 10.42.0.0/16 must both be"}},
		{"IPv6 first", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR, s.ClusterDNS = "fd00:42::/56,10.42.0.0/16", "10.43.0.0/16,fd00:43::/112", "10.43.0.10"
		}, []string{"cluster-cidr: fd00:42::/56,10.42.0.0/16: IPv6-only and IPv6-first clusters are not supported"}},
		{"IPv6 only", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR, s.ClusterDNS = "fd00:42::/56", "fd00:43::/112", "fd00:43::a"
		}, []string{"cluster-cidr: fd00:42::/56: IPv6-only and IPv6-first clusters are not supported"}},
		{"node IP of the wrong family", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR, s.NodeIP = "10.42.0.0/16,fd00:42::/56", "10.43.0.0/16,fd00:43::/112", "fd00:db8:5::10,192.0.2.2"
		}, []string{"node-ip: fd00:db8:5::10,192.0.2.2: address 1 is IPv6 but cluster-cidr 10.42.0.0/16,fd00:42::/56 lists IPv4 there"}},
		{"node IP family ignored without an agent", func(s *Server) {
			s.NodeIP, s.DisableAgent = "192.0.2.2,fd00:db8:5::10", true
		}, nil},
		{"IPv6 advertise address", func(s *Server) { s.AdvertiseAddress = "fd00:db8:5::10" },
			[]string{"advertise-address: fd00:db8:5::10 is IPv6 but service-cidr 10.43.0.0/16 is IPv4 first"}},
		{"unspecified IPv6 advertise address means detect", func(s *Server) { s.AdvertiseAddress = "::" }, nil},
		{"two cluster DNS of one family", func(s *Server) { s.ClusterDNS = "10.43.0.10,10.43.0.11" },
			[]string{`cluster-dns: "10.43.0.10,10.43.0.11": at most one IPv4 address`}},
		{"cluster DNS IPv6 first", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR, s.ClusterDNS = "10.42.0.0/16,fd00:42::/56", "10.43.0.0/16,fd00:43::/112", "fd00:43::a,10.43.0.10"
		}, []string{`cluster-dns: "fd00:43::a,10.43.0.10": the first address must be IPv4`}},
		{"IPv6 cluster CIDR too large for /64 nodes", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR = "10.42.0.0/16,fd00:42::/40", "10.43.0.0/16,fd00:43::/112"
		}, []string{"cluster-cidr: fd00:42::/40 is too large for node pod CIDRs of /64 (the default node CIDR size): the controller-manager allows at most 16 bits between them; use a /48 to /64"}},
		{"IPv6 cluster CIDR smaller than a node's", func(s *Server) {
			s.ClusterCIDR, s.ServiceCIDR = "10.42.0.0/16,fd00:42::/96", "10.43.0.0/16,fd00:43::/112"
		}, []string{"cluster-cidr: fd00:42::/96 is smaller than a node's pod CIDR (/64"}},
		{"IPv4 cluster CIDR smaller than a node's", func(s *Server) { s.ClusterCIDR = "10.42.0.0/25" },
			[]string{"cluster-cidr: 10.42.0.0/25 is smaller than a node's pod CIDR (/24, the default node CIDR size)"}},
		{"single-stack node mask from the controller-manager's flag", func(s *Server) {
			s.ClusterCIDR = "10.42.0.0/25"
			s.KubeControllerManagerArgs = []string{"node-cidr-mask-size=26"}
		}, nil},
		{"node mask beyond the address", func(s *Server) {
			s.KubeControllerManagerArgs = []string{"node-cidr-mask-size=33"}
		}, []string{"kube-controller-manager-arg: node-cidr-mask-size=33 is not a valid IPv4 prefix length"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := defaults(t)
			tc.set(&s)
			if err := s.Complete(); err != nil {
				t.Fatal(err)
			}
			errs := s.Validate()
			if len(errs) != len(tc.wantErr) {
				t.Fatalf("got %d errors %v, want %q", len(errs), errs, tc.wantErr)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tc.wantErr[i]) {
					t.Errorf("error %d: %q does not contain %q", i, err, tc.wantErr[i])
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error %d spans lines: %q", i, err)
				}
			}
		})
	}
}

func TestCompleteTrimsLists(t *testing.T) {
	s := defaults(t)
	s.ClusterCIDR, s.ServiceCIDR, s.ClusterDNS, s.NodeIP = " 10.42.0.0/16, fd00:42::/56", "10.43.0.0/16 ,fd00:43::/112", "10.43.0.10, fd00:43::a", "192.0.2.2, fd00::2"
	if err := s.Complete(); err != nil {
		t.Fatal(err)
	}
	if s.ClusterCIDR != "10.42.0.0/16,fd00:42::/56" || s.ServiceCIDR != "10.43.0.0/16,fd00:43::/112" || s.ClusterDNS != "10.43.0.10,fd00:43::a" || s.NodeIP != "192.0.2.2,fd00::2" {
		t.Errorf("not trimmed: %q %q %q %q", s.ClusterCIDR, s.ServiceCIDR, s.ClusterDNS, s.NodeIP)
	}
	if !IsDualStack(s.ClusterCIDR) || IsDualStack("10.42.0.0/16") || IsDualStack("bogus,x") {
		t.Error("IsDualStack")
	}
}
