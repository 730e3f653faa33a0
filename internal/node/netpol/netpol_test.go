package netpol

import (
	"net/netip"
	"strings"
	"testing"
)

func TestQueueRulesQueueOnlyNewPodConnections(t *testing.T) {
	var lines []string
	for _, r := range queueRules(netip.MustParsePrefix("10.42.0.0/16")) {
		lines = append(lines, strings.Join(r, " "))
	}
	got := strings.Join(lines, "\n")
	want := `-m owner --uid-owner 0 -j RETURN
-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
-s 10.42.0.0/16 -j NFQUEUE --queue-num 1730 --queue-bypass
-d 10.42.0.0/16 -j NFQUEUE --queue-num 1730 --queue-bypass`
	if got != want {
		t.Errorf("IPv4 rules:\n%s\nwant:\n%s", got, want)
	}
	v6 := queueRules(netip.MustParsePrefix("fd00:42::/56"))
	if strings.Join(v6[0], " ") != "-p ipv6-icmp -j RETURN" {
		t.Errorf("IPv6 rules do not let neighbour discovery pass first: %q", v6[0])
	}
	if last := strings.Join(v6[len(v6)-1], " "); !strings.HasPrefix(last, "-d fd00:42::/56 -j NFQUEUE") {
		t.Errorf("IPv6 rules end with %q", last)
	}
}
