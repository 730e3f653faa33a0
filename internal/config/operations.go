package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/spf13/pflag"
)

// Operations are the server options for running skiff as a service for
// years (issue 14): secrets at rest, the NodePort range and the registry
// skiff's own images come from. They are embedded in Server, so their flags
// are the server's flags.
type Operations struct {
	SecretsEncryption         bool   `json:"secrets-encryption"`
	SecretsEncryptionProvider string `json:"secrets-encryption-provider"`
	ServiceNodePortRange      string `json:"service-node-port-range"`
	SystemDefaultRegistry     string `json:"system-default-registry"`
}

// SecretsEncryptionProviders are the values --secrets-encryption-provider
// takes, named as the apiserver's EncryptionConfiguration names them.
var SecretsEncryptionProviders = []string{"aescbc", "secretbox"}

// DefaultPrivateRegistry is where registries.yaml is read from unless
// --private-registry moves it.
const DefaultPrivateRegistry = "/etc/skiff/registries.yaml"

// AddFlags registers the operations options on fs with their defaults.
func (o *Operations) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.SecretsEncryption, "secrets-encryption", false, "encrypt Secrets at rest in the datastore (key in <data-dir>/server/cred)")
	fs.StringVar(&o.SecretsEncryptionProvider, "secrets-encryption-provider", "aescbc", "cipher for secrets encryption: aescbc or secretbox")
	fs.StringVar(&o.ServiceNodePortRange, "service-node-port-range", "30000-32767", "port range reserved for NodePort Services, FROM-TO")
	fs.StringVar(&o.SystemDefaultRegistry, "system-default-registry", "", "registry host that prefixes every image skiff itself references (its add-ons' and the pause image)")
}

// Validate returns every problem with the operations options, each naming
// its flag.
func (o *Operations) Validate() []error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if !contains(SecretsEncryptionProviders, o.SecretsEncryptionProvider) {
		add(fieldError("secrets-encryption-provider", "unknown provider %q; want one of %s", o.SecretsEncryptionProvider, strings.Join(SecretsEncryptionProviders, ", ")))
	}
	if _, _, err := ParsePortRange(o.ServiceNodePortRange); err != nil {
		add(fieldError("service-node-port-range", "%v", err))
	}
	if r := o.SystemDefaultRegistry; r != "" {
		if err := checkRegistryHost(r); err != nil {
			add(fieldError("system-default-registry", "%v", err))
		}
	}
	return errs
}

// ParsePortRange parses "FROM-TO" (a single "PORT" is FROM=TO, as the
// apiserver accepts) into its bounds, 1..65535 with FROM <= TO.
func ParsePortRange(s string) (from, to int, err error) {
	lo, hi, found := strings.Cut(strings.TrimSpace(s), "-")
	if !found {
		hi = lo
	}
	from, err1 := strconv.Atoi(strings.TrimSpace(lo))
	to, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || from < 1 || to > 65535 || from > to {
		return 0, 0, fmt.Errorf("%q is not a port range like 30000-32767", s)
	}
	return from, to, nil
}

// checkRegistryHost accepts a registry host as image references name one:
// host[:port], without a scheme or a path.
func checkRegistryHost(r string) error {
	if strings.Contains(r, "://") || strings.Contains(r, "/") {
		return fmt.Errorf("%q is not a registry host like registry.example.com:5000 (no scheme, no path)", r)
	}
	// A registry host is a valid domain of a reference: check it as one.
	if _, err := reference.ParseNormalizedNamed(r + "/x/y"); err != nil {
		return fmt.Errorf("%q is not a registry host like registry.example.com:5000: %v", r, err)
	}
	return nil
}

// validateOperations checks the node options of issue 14.
func (n *Node) validateOperations() []error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if n.NodeExternalIP != "" {
		if _, err := ParseIPs(n.NodeExternalIP); err != nil {
			add(fieldError("node-external-ip", "%v", err))
		}
	}
	if strings.ContainsAny(n.FlannelIface, " \t\n/") || len(n.FlannelIface) > 15 {
		add(fieldError("flannel-iface", "%q is not an interface name", n.FlannelIface))
	}
	if p := n.PrivateRegistry; p != "" && !filepath.IsAbs(p) {
		add(fieldError("private-registry", "must be an absolute path, got %q", p))
	}
	return errs
}

// ExternalIPs parses --node-external-ip; nil when unset or invalid
// (Validate reports the latter).
func (n *Node) ExternalIPs() []netip.Addr {
	if n.NodeExternalIP == "" {
		return nil
	}
	ips, err := ParseIPs(n.NodeExternalIP)
	if err != nil {
		return nil
	}
	return ips
}
