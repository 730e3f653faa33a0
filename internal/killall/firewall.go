package killall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Chains created by kube-proxy and the kubelet (KUBE-), the CNI portmap and
// bridge plugins (CNI-), flannel (FLANNEL-) and skiff's network policy
// queueing (SKIFF-NETPOL). firewall_test.go checks every chain name in the
// bundled modules' sources against them.
var ourChainPrefixes = []string{"KUBE-", "CNI-", "FLANNEL-", "SKIFF-NETPOL"}

// Words in a rule's comment that mark it as ours, for rules in built-in
// chains such as flannel's `--comment "flanneld masq"`.
var ourCommentWords = []string{"flanneld", "kube-proxy", "skiff"}

// FilterStats counts what FilterIptablesSave dropped.
type FilterStats struct {
	Rules, Chains int
}

// FilterIptablesSave removes our chains and rules from iptables-save (or
// ip6tables-save) output and returns what iptables-restore should load. A
// chain is ours by its name's prefix; a rule is ours when its chain or its
// jump/goto target is one of ours, or its comment names flanneld,
// kube-proxy or skiff. Everything else — tables, policies, other programs'
// chains such as Docker's — passes through unchanged.
func FilterIptablesSave(save string) (string, FilterStats) {
	var b strings.Builder
	b.Grow(len(save))
	var st FilterStats
	for line := range strings.Lines(save) {
		text := strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(text, ":"):
			name, _, _ := strings.Cut(text[1:], " ")
			if isOurChain(name) {
				st.Chains++
				continue
			}
		case isRuleLine(text):
			if ruleIsOurs(splitRule(text)) {
				st.Rules++
				continue
			}
		}
		b.WriteString(line)
	}
	return b.String(), st
}

// isRuleLine recognises "-A CHAIN ..." and, from iptables-save -c,
// "[pkts:bytes] -A CHAIN ...".
func isRuleLine(s string) bool {
	if strings.HasPrefix(s, "[") {
		if _, rest, ok := strings.Cut(s, "] "); ok {
			s = rest
		}
	}
	return strings.HasPrefix(s, "-A ") || strings.HasPrefix(s, "-I ")
}

func isOurChain(name string) bool {
	return slices.ContainsFunc(ourChainPrefixes, func(p string) bool { return strings.HasPrefix(name, p) })
}

func ruleIsOurs(args []string) bool {
	for i := 0; i+1 < len(args); i++ {
		v := args[i+1]
		switch args[i] {
		case "-A", "--append", "-I", "--insert", "-j", "--jump", "-g", "--goto":
			if isOurChain(v) {
				return true
			}
		case "--comment":
			c := strings.ToLower(v)
			if slices.ContainsFunc(ourCommentWords, func(w string) bool { return strings.Contains(c, w) }) {
				return true
			}
		}
	}
	return false
}

// splitRule splits an iptables-save rule into words the way iptables-restore
// does: double quotes group, and a backslash inside them escapes the next
// character (the bridge plugin writes --comment "name: \"cbr0\" id: ...").
func splitRule(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (c == ' ' || c == '\t'):
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// NftTable is a table from `nft list tables`.
type NftTable struct{ Family, Name string }

// ourNftTables are the nftables tables of the bundled components, by the
// names their modules use (firewall_test.go reads them from the module
// sources of the versions in go.mod):
//   - kube-proxy's nftables mode (k8s.io/kubernetes pkg/proxy/nftables,
//     kubeProxyTable, families ip and ip6);
//   - flannel's nftables mode (pkg/trafficmngr/nftables, ipv4Table in ip,
//     ipv6Table in ip6);
//   - the CNI portmap plugin's nftables backend, used when the host has no
//     iptables (plugins/meta/portmap, tableName, ip and ip6): shared with
//     other CNI users, so only skiff's entries go (clearPortmapTable);
//   - skiff's network policy engine (internal/node/netpol.NFTable, inet)
//     and its probe table, should a crash have left it.
//
// The bridge plugin's cni_plugins_masquerade is not among them: skiff runs
// the bridge with ipMasq off, and another CNI user on the host (podman) may
// own that table.
var ourNftTables = []NftTable{
	{"ip", "kube-proxy"}, {"ip6", "kube-proxy"},
	{"ip", "flannel-ipv4"}, {"ip6", "flannel-ipv6"},
	{"ip", "cni_hostport"}, {"ip6", "cni_hostport"},
	{"inet", "skiff-network-policy"}, {"inet", "skiff-queue-probe"},
}

// SelectNftTables returns our tables among `nft list tables` output
// ("table ip kube-proxy", one a line).
func SelectNftTables(list string) []NftTable {
	var out []NftTable
	for line := range strings.Lines(list) {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "table" {
			continue
		}
		t := NftTable{f[1], f[2]}
		if slices.Contains(ourNftTables, t) {
			out = append(out, t)
		}
	}
	return out
}

func (r *runner) removeFirewallRules(ctx context.Context, rep *Report) error {
	start := time.Now()
	var errs []error
	for _, fam := range []struct{ save, restore string }{
		{"iptables-save", "iptables-restore"},
		{"ip6tables-save", "ip6tables-restore"},
	} {
		if err := r.filterIptables(ctx, fam.save, fam.restore, rep); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.deleteNftTables(ctx, rep); err != nil {
		errs = append(errs, err)
	}
	r.log.Info("removed firewall rules", "rules", rep.RulesRemoved, "chains", rep.ChainsRemoved, "nftTables", rep.NftTablesDeleted, "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

func (r *runner) filterIptables(ctx context.Context, save, restore string, rep *Report) error {
	for _, bin := range []string{save, restore} {
		if _, err := r.exec.LookPath(bin); err != nil {
			r.log.Debug("not installed, skipping", "binary", bin)
			return nil
		}
	}
	out, err := r.exec.Run(ctx, nil, save)
	if err != nil {
		// A host without IPv6 or without the iptables modules has nothing
		// of ours to remove; that is no failure of killall's.
		r.log.Warn("cannot read firewall rules, skipping", "binary", save, "err", err)
		return nil
	}
	kept, st := FilterIptablesSave(string(out))
	if st.Rules == 0 && st.Chains == 0 {
		return nil
	}
	if _, err := r.exec.Run(ctx, strings.NewReader(kept), restore); err != nil {
		return fmt.Errorf("restoring filtered rules with %s: %w", restore, err)
	}
	rep.RulesRemoved += st.Rules
	rep.ChainsRemoved += st.Chains
	return nil
}

func (r *runner) deleteNftTables(ctx context.Context, rep *Report) error {
	if _, err := r.exec.LookPath("nft"); err != nil {
		r.log.Debug("not installed, skipping", "binary", "nft")
		return nil
	}
	out, err := r.exec.Run(ctx, nil, "nft", "list", "tables")
	if err != nil {
		r.log.Warn("cannot list nftables tables, skipping", "err", err)
		return nil
	}
	var errs []error
	for _, t := range SelectNftTables(string(out)) {
		if t.Name == portmapTable {
			deleted, rules, err := r.clearPortmapTable(ctx, t)
			if deleted {
				rep.NftTablesDeleted++
			}
			rep.RulesRemoved += rules
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if _, err := r.exec.Run(ctx, nil, "nft", "delete", "table", t.Family, t.Name); err != nil {
			errs = append(errs, fmt.Errorf("deleting nftables table %s %s: %w", t.Family, t.Name, err))
			continue
		}
		rep.NftTablesDeleted++
	}
	return errors.Join(errs...)
}
