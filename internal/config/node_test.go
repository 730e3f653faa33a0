package config

import (
	"errors"
	"strings"
	"testing"
)

func TestResolveNodeName(t *testing.T) {
	host := func(name string) func() (string, error) {
		return func() (string, error) { return name, nil }
	}
	tests := []struct {
		name, flag, hostname string
		want                 string
		wantErr              []string
	}{
		{name: "host name lower-cased", hostname: "Edge-Node01", want: "edge-node01"},
		{name: "flag wins", flag: "n1", hostname: "edge_node01", want: "n1"},
		{name: "fqdn host", hostname: "a.b.example", want: "a.b.example"},
		{name: "underscore in host name", hostname: "edge_node01", wantErr: []string{`"edge_node01"`, "RFC 1123", "--node-name"}},
		{name: "host name too long", hostname: strings.Repeat("a", 254), wantErr: []string{"253", "--node-name"}},
		{name: "dot at the end", hostname: "node.", wantErr: []string{`"node."`, "--node-name"}},
		{name: "bad flag", flag: "bad_name", hostname: "ok", wantErr: []string{"node-name: ", `"bad_name"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := Node{NodeName: tc.flag}
			n.Complete()
			got, err := n.ResolveNodeName(host(tc.hostname))
			if tc.wantErr == nil {
				if err != nil || got != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %q, want an error", got)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("want one line, got %q", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := (&Node{}).ResolveNodeName(func() (string, error) { return "", errors.New("boom") }); err == nil || !strings.Contains(err.Error(), "--node-name") {
		t.Errorf("unreadable host name: %v", err)
	}
}

// Labels a kubelet may not set on its own Node (the kubelet's and
// NodeRestriction's rule) are refused; the kubelet's own and any outside the
// kubernetes.io and k8s.io namespaces pass.
func TestNodeLabelsTheNodeMaySet(t *testing.T) {
	allowed := []string{
		"env=edge", "example.com/tier=a", "kubernetes.io.example.com/x=y",
		"node.kubernetes.io/instance-type=small", "kubelet.kubernetes.io/x=1",
		"topology.kubernetes.io/zone=z1", "kubernetes.io/arch=amd64", "beta.kubernetes.io/os=linux",
		"sub.node.kubernetes.io/x=1",
	}
	refused := []string{
		"node-role.kubernetes.io/worker=true", "node-role.kubernetes.io/control-plane=",
		"kubernetes.io/role=master", "example.k8s.io/x=y", "k8s.io/x=y",
		"node-restriction.kubernetes.io/pool=a", "sub.node-restriction.kubernetes.io/pool=a",
	}
	for _, l := range allowed {
		if errs := (&Node{NodeLabels: []string{l}, FlannelBackend: "vxlan"}).Validate(); len(errs) > 0 {
			t.Errorf("%s refused: %v", l, errs)
		}
	}
	for _, l := range refused {
		errs := (&Node{NodeLabels: []string{l}, FlannelBackend: "vxlan"}).Validate()
		if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "node-label: ") || !strings.Contains(errs[0].Error(), "may not set this label on itself") {
			t.Errorf("%s: got %v, want one node-label error", l, errs)
		}
	}
}
