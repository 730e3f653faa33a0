package killall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/skiffkube/skiff/internal/node/cniconf"
)

// portmapTable is the CNI portmap plugin's nftables table (plugins/meta/portmap
// tableName). Every CNI user on the host that maps host ports through the
// portmap plugin's nftables backend (podman, another kubelet) shares it; the
// plugin tags each of a container's rules with the container's ID as the
// rule's comment, and nothing else in the table names the network.
const portmapTable = "cni_hostport"

// NftRule is one rule of `nft -j list table` output.
type NftRule struct {
	Family  string `json:"family"`
	Table   string `json:"table"`
	Chain   string `json:"chain"`
	Handle  int    `json:"handle"`
	Comment string `json:"comment"`
}

// ParseNftRules reads the rules out of `nft -j list table ...` output
// ({"nftables": [{"metainfo": ...}, {"table": ...}, {"chain": ...}, {"rule": ...}]}).
func ParseNftRules(out []byte) ([]NftRule, error) {
	var doc struct {
		Nftables []struct {
			Rule *NftRule `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("reading nft's JSON: %w", err)
	}
	var rules []NftRule
	for _, o := range doc.Nftables {
		if o.Rule != nil {
			rules = append(rules, *o.Rule)
		}
	}
	return rules, nil
}

// SplitPortmapRules splits the rules of a portmap table into ours (their
// comment is one of ourIDs, the container IDs of skiff's CNI network) and
// the count of others' (a comment naming another container). Rules without
// a comment are the plugin's own plumbing (jumps between its chains) and
// belong to nobody in particular.
func SplitPortmapRules(rules []NftRule, ourIDs map[string]bool) (ours []NftRule, others int) {
	for _, r := range rules {
		switch {
		case r.Comment == "":
		case ourIDs[r.Comment]:
			ours = append(ours, r)
		default:
			others++
		}
	}
	return ours, others
}

// cniContainerIDs returns the IDs of the containers (pod sandboxes) that
// skiff's CNI network (cniconf.NetworkName) has given an address, from the
// CNI state under cniDir: host-local's leases (networks/<net>/<ip>, whose
// first line is the container ID) and libcni's result cache
// (results/<net>-<containerID>-<ifname>). Missing directories give none.
func cniContainerIDs(cniDir string) map[string]bool {
	ids := map[string]bool{}
	leases := filepath.Join(cniDir, "networks", cniconf.NetworkName)
	if entries, err := os.ReadDir(leases); err == nil {
		for _, e := range entries {
			if e.IsDir() || e.Name() == "lock" || strings.HasPrefix(e.Name(), "last_reserved_ip") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(leases, e.Name()))
			if err != nil {
				continue
			}
			if id, _, _ := strings.Cut(string(b), "\n"); strings.TrimSpace(id) != "" {
				ids[strings.TrimSpace(id)] = true
			}
		}
	}
	if entries, err := os.ReadDir(filepath.Join(cniDir, "results")); err == nil {
		for _, e := range entries {
			rest, ok := strings.CutPrefix(e.Name(), cniconf.NetworkName+"-")
			if !ok {
				continue
			}
			if i := strings.LastIndexByte(rest, '-'); i > 0 {
				ids[rest[:i]] = true
			}
		}
	}
	return ids
}

// clearPortmapTable removes skiff's entries from the portmap table t: the
// whole table when nobody else has entries in it, otherwise only the rules
// tagged with skiff's containers. It reports whether it deleted the table
// and how many rules it removed.
func (r *runner) clearPortmapTable(ctx context.Context, t NftTable) (deleted bool, rules int, err error) {
	out, err := r.exec.Run(ctx, nil, "nft", "-j", "list", "table", t.Family, t.Name)
	if err != nil {
		return false, 0, fmt.Errorf("listing nftables table %s %s: %w", t.Family, t.Name, err)
	}
	all, err := ParseNftRules(out)
	if err != nil {
		return false, 0, fmt.Errorf("listing nftables table %s %s: %w", t.Family, t.Name, err)
	}
	ours, others := SplitPortmapRules(all, cniContainerIDs(r.cniDir))
	if others == 0 {
		if _, err := r.exec.Run(ctx, nil, "nft", "delete", "table", t.Family, t.Name); err != nil {
			return false, 0, fmt.Errorf("deleting nftables table %s %s: %w", t.Family, t.Name, err)
		}
		return true, 0, nil
	}
	r.log.Info("keeping the CNI portmap table other CNI users share", "table", t.Family+" "+t.Name, "theirRules", others, "ourRules", len(ours))
	var errs []error
	for _, rule := range ours {
		if _, err := r.exec.Run(ctx, nil, "nft", "delete", "rule", t.Family, t.Name, rule.Chain, "handle", strconv.Itoa(rule.Handle)); err != nil {
			errs = append(errs, fmt.Errorf("deleting rule %d of nftables chain %s %s %s: %w", rule.Handle, t.Family, t.Name, rule.Chain, err))
			continue
		}
		rules++
	}
	return false, rules, errors.Join(errs...)
}
