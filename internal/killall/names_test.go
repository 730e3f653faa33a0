package killall

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// These tests read the names of tables, chains, comments and links from the
// sources of the bundled modules (the versions go.mod requires) and of
// skiff's own packages, so that an upgrade that renames one fails here
// rather than leaving rules behind on users' hosts. The constants are
// unexported upstream, hence parsing rather than importing.

// moduleSource returns the text of file in module mod at the version the
// build uses.
func moduleSource(t *testing.T, mod, file string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mod).Output()
	if err != nil {
		t.Fatalf("finding module %s (go list -m): %v", mod, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatalf("module %s is not in the module cache (go mod download)", mod)
	}
	return readSource(t, filepath.Join(dir, file))
}

func readSource(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// stringConsts returns the string constants declared in src by name.
func stringConsts(t *testing.T, src string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out[name.Name] = v
				}
			}
		}
	}
	return out
}

// stringLits returns every string literal in src.
func stringLits(t *testing.T, src string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if v, err := strconv.Unquote(lit.Value); err == nil {
				out = append(out, v)
			}
		}
		return true
	})
	return out
}

func mustContain(t *testing.T, what, src string, re string) {
	t.Helper()
	if !regexp.MustCompile(re).MatchString(src) {
		t.Errorf("%s no longer matches %q: check which table family it uses", what, re)
	}
}

func TestNftTablesOfBundledComponents(t *testing.T) {
	var tables []NftTable

	kp := "k8s.io/kubernetes"
	name := stringConsts(t, moduleSource(t, kp, "pkg/proxy/nftables/proxier.go"))["kubeProxyTable"]
	mustContain(t, "kube-proxy's cleanup", moduleSource(t, kp, "pkg/proxy/nftables/cleanup.go"),
		`knftables\.IPv4Family, knftables\.IPv6Family\}[\s\S]*knftables\.New\(family, kubeProxyTable\)`)
	tables = append(tables, NftTable{"ip", name}, NftTable{"ip6", name})

	fl := "github.com/flannel-io/flannel"
	src := moduleSource(t, fl, "pkg/trafficmngr/nftables/nftables.go")
	c := stringConsts(t, src)
	mustContain(t, "flannel's nftables mode", src, `knftables\.IPv4Family, ipv4Table\)`)
	mustContain(t, "flannel's nftables mode", src, `knftables\.IPv6Family, ipv6Table\)`)
	tables = append(tables, NftTable{"ip", c["ipv4Table"]}, NftTable{"ip6", c["ipv6Table"]})

	pm := "github.com/containernetworking/plugins"
	src = moduleSource(t, pm, "plugins/meta/portmap/portmap_nftables.go")
	name = stringConsts(t, src)["tableName"]
	mustContain(t, "portmap's nftables backend", src, `knftables\.New\(knftables\.IPv4Family, tableName\)`)
	mustContain(t, "portmap's nftables backend", src, `knftables\.New\(knftables\.IPv6Family, tableName\)`)
	// clearPortmapTable tells skiff's entries by the container ID in their
	// comment, the only tag the plugin puts on them.
	mustContain(t, "portmap's nftables rules", src, `Comment: &config\.ContainerID`)
	if portmapTable != name {
		t.Errorf("portmapTable = %q, portmap's tableName = %q", portmapTable, name)
	}
	tables = append(tables, NftTable{"ip", name}, NftTable{"ip6", name})

	src = readSource(t, "../node/netpol/netpol.go")
	name = stringConsts(t, src)["NFTable"]
	mustContain(t, "kube-network-policies", moduleSource(t, "sigs.k8s.io/kube-network-policies", "pkg/networkpolicy/controller.go"),
		`Name:\s+c\.config\.NFTableName,\s+Family:\s+nftables\.TableFamilyINet`)
	tables = append(tables, NftTable{"inet", name})
	probe := regexp.MustCompile(`nftables\.Table\{Name: "([^"]+)", Family: nftables\.TableFamilyINet\}`).FindStringSubmatch(src)
	if probe == nil {
		t.Fatal("skiff's nftables queue probe table not found in internal/node/netpol")
	}
	tables = append(tables, NftTable{"inet", probe[1]})

	var list strings.Builder
	for _, tb := range tables {
		if tb.Name == "" {
			t.Fatalf("a table name was not found: %v", tables)
		}
		fmt.Fprintf(&list, "table %s %s\n", tb.Family, tb.Name)
	}
	// Tables of other programs, and ours in the wrong family, stay.
	list.WriteString("table inet filter\ntable ip nat\ntable inet kube-proxy\ntable ip kube-network-policies\ntable inet cni_plugins_masquerade\ntable ip flannel\n")
	if got := SelectNftTables(list.String()); !slices.Equal(got, tables) {
		t.Errorf("SelectNftTables selects\n%v\nthe bundled components create\n%v", got, tables)
	}
	// The case, spelled out.
	for _, want := range []NftTable{{"ip", "flannel-ipv4"}, {"ip6", "flannel-ipv6"}} {
		if !slices.Contains(tables, want) {
			t.Errorf("flannel v0.28's table %v not found in its source", want)
		}
	}
}

// chainLike matches iptables chain names as the components spell them:
// upper case words joined by dashes, maybe ending in a dash (a prefix).
var chainLike = regexp.MustCompile(`^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+-?$`)

func TestIptablesChainsOfBundledComponents(t *testing.T) {
	kp, fl, pm := "k8s.io/kubernetes", "github.com/flannel-io/flannel", "github.com/containernetworking/plugins"
	sources := map[string]string{
		"kube-proxy (iptables mode)":   moduleSource(t, kp, "pkg/proxy/iptables/proxier.go"),
		"kubelet":                      moduleSource(t, kp, "pkg/kubelet/kubelet_network_linux.go"),
		"flannel (iptables mode)":      moduleSource(t, fl, "pkg/trafficmngr/iptables/iptables.go"),
		"portmap (iptables backend)":   moduleSource(t, pm, "plugins/meta/portmap/portmap_iptables.go"),
		"bridge ipMasq (iptables)":     moduleSource(t, pm, "pkg/ip/ipmasq_iptables_linux.go"),
		"skiff network policy (queue)": readSource(t, "../node/netpol/netpol.go"),
	}
	seen := map[string]int{}
	for who, src := range sources {
		checked := map[string]bool{}
		for _, s := range stringLits(t, src) {
			if !chainLike.MatchString(s) || checked[s] {
				continue
			}
			checked[s] = true
			seen[who]++
			if !isOurChain(s) {
				t.Errorf("%s creates chain %s, which killall would leave", who, s)
			}
		}
		// Rules flannel puts in built-in chains are known by comment.
		lits := stringLits(t, src)
		for i := 0; i+1 < len(lits); i++ {
			if lits[i] != "--comment" || who != "flannel (iptables mode)" {
				continue
			}
			rule := []string{"-A", "FORWARD", "-m", "comment", "--comment", lits[i+1], "-j", "ACCEPT"}
			if !ruleIsOurs(rule) {
				t.Errorf("%s's rule with comment %q in a built-in chain is not recognised", who, lits[i+1])
			}
			seen[who+" comments"]++
		}
	}
	for _, who := range []string{"kube-proxy (iptables mode)", "kubelet", "flannel (iptables mode)", "portmap (iptables backend)", "skiff network policy (queue)", "flannel (iptables mode) comments"} {
		if seen[who] == 0 {
			t.Errorf("no chain names or comments found for %s: has its source moved?", who)
		}
	}
}

func TestLinksOfBundledComponents(t *testing.T) {
	src := moduleSource(t, "github.com/flannel-io/flannel", "pkg/backend/vxlan/vxlan.go")
	var formats []string
	for _, s := range stringLits(t, src) {
		if strings.HasPrefix(s, "flannel") && strings.HasSuffix(s, ".%d") {
			formats = append(formats, s)
		}
	}
	if len(formats) != 2 {
		t.Fatalf("flannel's VXLAN device names: found %q, want the IPv4 and IPv6 ones", formats)
	}
	for _, f := range formats {
		for _, vni := range []int{1, 4096} {
			if name := fmt.Sprintf(f, vni); !isFlannelDevice(name) {
				t.Errorf("flannel device %s not recognised", name)
			}
		}
	}
	for _, name := range []string{"flannel", "flannel.", "flannel.x", "flannel0", "flannel-wg", "cni0.1"} {
		if isFlannelDevice(name) {
			t.Errorf("%s taken for a flannel VXLAN device", name)
		}
	}
	bridge := regexp.MustCompile(`"bridge":\s+"([^"]+)"`).FindStringSubmatch(readSource(t, "../node/cniconf/cniconf.go"))
	if bridge == nil || bridge[1] != cniBridge {
		t.Errorf("skiff's CNI bridge is %v, killall deletes %s", bridge, cniBridge)
	}
}
