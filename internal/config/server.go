package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/skiffkube/skiff/internal/token"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Server is the configuration of `skiff server`. The JSON names are the flag
// names, so a dump of a Server reads like the config file that produced it.
type Server struct {
	DataDir                   string   `json:"data-dir"`
	HTTPSListenPort           int      `json:"https-listen-port"`
	BindAddress               string   `json:"bind-address"`
	AdvertiseAddress          string   `json:"advertise-address"`
	TLSSANs                   []string `json:"tls-san"`
	ClusterCIDR               string   `json:"cluster-cidr"`
	ServiceCIDR               string   `json:"service-cidr"`
	ClusterDNS                string   `json:"cluster-dns"`
	ClusterDomain             string   `json:"cluster-domain"`
	Token                     string   `json:"token"`
	TokenFile                 string   `json:"token-file"`
	AgentToken                string   `json:"agent-token"`
	AgentTokenFile            string   `json:"agent-token-file"`
	WriteKubeconfig           string   `json:"write-kubeconfig"`
	WriteKubeconfigMode       string   `json:"write-kubeconfig-mode"`
	DatastoreEndpoint         string   `json:"datastore-endpoint"`
	DatastoreCAFile           string   `json:"datastore-cafile"`
	DatastoreCertFile         string   `json:"datastore-certfile"`
	DatastoreKeyFile          string   `json:"datastore-keyfile"`
	ClusterInit               bool     `json:"cluster-init"`
	Server                    string   `json:"server"`
	ClusterReset              bool     `json:"cluster-reset"`
	ClusterResetRestorePath   string   `json:"cluster-reset-restore-path"`
	EtcdArgs                  []string `json:"etcd-arg"`
	EtcdExposeMetrics         bool     `json:"etcd-expose-metrics"`
	EtcdDisableSnapshots      bool     `json:"etcd-disable-snapshots"`
	EtcdSnapshotScheduleCron  string   `json:"etcd-snapshot-schedule-cron"`
	EtcdSnapshotRetention     int      `json:"etcd-snapshot-retention"`
	EtcdSnapshotDir           string   `json:"etcd-snapshot-dir"`
	EtcdSnapshotCompress      bool     `json:"etcd-snapshot-compress"`
	DisableAgent              bool     `json:"disable-agent"`
	DisableScheduler          bool     `json:"disable-scheduler"`
	DisableControllerManager  bool     `json:"disable-controller-manager"`
	Disable                   []string `json:"disable"`
	DisableNetworkPolicy      bool     `json:"disable-network-policy"`
	DisableHelmController     bool     `json:"disable-helm-controller"`
	DefaultLocalStoragePath   string   `json:"default-local-storage-path"`
	KubeAPIServerArgs         []string `json:"kube-apiserver-arg"`
	KubeControllerManagerArgs []string `json:"kube-controller-manager-arg"`
	KubeSchedulerArgs         []string `json:"kube-scheduler-arg"`
	Debug                     bool     `json:"debug"`
	LogLevel                  int      `json:"v"`

	Operations
	Node
}

// Addons are the bundled add-ons that --disable names.
var Addons = []string{"coredns", "local-storage", "metrics-server", "servicelb"}

// K3sOnlyAddons are the packaged components K3s's --disable names that
// skiff does not ship (K3s v1.36: traefik and runtimes). Disabling one is
// accepted with a warning, so a K3s config file works unchanged.
var K3sOnlyAddons = []string{"traefik", "runtimes"}

// Warnings are settings that are accepted but do nothing, each a
// *FieldError naming its flag (Origins.Explain adds the file). Call it after
// Validate.
func (s *Server) Warnings() []error {
	var warns []error
	for _, name := range s.Disable {
		if slices.Contains(K3sOnlyAddons, name) {
			warns = append(warns, itemError("disable", name, "%q is a K3s component that skiff does not ship; nothing to disable", name))
		}
	}
	return warns
}

// EmbeddedEtcd reports whether the flags ask for embedded etcd: a new
// cluster (--cluster-init) or a server joining one (--server). A data dir
// that already holds etcd data keeps using it without either flag; that is
// for the datastore to find out.
func (s *Server) EmbeddedEtcd() bool {
	return s.DatastoreEndpoint == "" && (s.ClusterInit || s.Server != "")
}

// SnapshotDir is where snapshots are written and looked for.
func (s *Server) SnapshotDir() string {
	if s.EtcdSnapshotDir != "" {
		return s.EtcdSnapshotDir
	}
	return filepath.Join(s.DataDir, "server", "db", "snapshots")
}

// LocalStoragePath is where local-path volumes go on every node.
func (s *Server) LocalStoragePath() string {
	if s.DefaultLocalStoragePath != "" {
		return s.DefaultLocalStoragePath
	}
	return filepath.Join(s.DataDir, "storage")
}

// Disabled reports whether --disable names the add-on.
func (s *Server) Disabled(addon string) bool { return slices.Contains(s.Disable, addon) }

// AddFlags registers every Server option on fs with its default. The defaults
// live here and nowhere else.
func (s *Server) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&s.DataDir, "data-dir", "d", "/var/lib/skiff", "directory that holds cluster state")
	fs.IntVar(&s.HTTPSListenPort, "https-listen-port", 6443, "port the API server listens on")
	fs.StringVar(&s.BindAddress, "bind-address", "", "IP address to listen on (default: all interfaces)")
	fs.StringVar(&s.AdvertiseAddress, "advertise-address", "", "IP address the API server advertises to the cluster (default: detected)")
	// Empty, non-nil defaults keep "no value" and "empty list" the same thing.
	fs.StringSliceVar(&s.TLSSANs, "tls-san", []string{}, "extra hostname or IP for the server certificate (repeatable)")
	fs.StringVar(&s.ClusterCIDR, "cluster-cidr", "10.42.0.0/16", "pod network CIDR, or an IPv4,IPv6 pair for dual-stack")
	fs.StringVar(&s.ServiceCIDR, "service-cidr", "10.43.0.0/16", "service network CIDR, or an IPv4,IPv6 pair for dual-stack")
	fs.StringVar(&s.ClusterDNS, "cluster-dns", "10.43.0.10", "IP of the cluster DNS service, inside service-cidr")
	fs.StringVar(&s.ClusterDomain, "cluster-domain", "cluster.local", "cluster domain")
	fs.StringVarP(&s.Token, "token", "t", "", "shared secret that servers and agents use to join")
	fs.StringVar(&s.TokenFile, "token-file", "", "file that holds the token")
	fs.StringVar(&s.AgentToken, "agent-token", "", "secret that agents (not servers) may also join with")
	fs.StringVar(&s.AgentTokenFile, "agent-token-file", "", "file that holds the agent token")
	fs.StringVarP(&s.WriteKubeconfig, "write-kubeconfig", "o", "/etc/skiff/skiff.yaml", "write the admin kubeconfig to this file")
	fs.StringVar(&s.WriteKubeconfigMode, "write-kubeconfig-mode", "", "octal file mode of the kubeconfig, like 0644 (default: 0600)")
	fs.StringVar(&s.DatastoreEndpoint, "datastore-endpoint", "", "sqlite, postgres, mysql or etcd URL (default: SQLite in data-dir)")
	fs.StringVar(&s.DatastoreCAFile, "datastore-cafile", "", "CA file that verifies the external datastore's TLS certificate")
	fs.StringVar(&s.DatastoreCertFile, "datastore-certfile", "", "client certificate file for the external datastore")
	fs.StringVar(&s.DatastoreKeyFile, "datastore-keyfile", "", "client key file for the external datastore")
	fs.BoolVar(&s.ClusterInit, "cluster-init", false, "start a new cluster on embedded etcd (other servers join it with --server)")
	fs.StringVarP(&s.Server, "server", "s", "", "URL of a server of the cluster to join as another server, like https://10.0.0.1:6443 (embedded etcd)")
	fs.BoolVar(&s.ClusterReset, "cluster-reset", false, "make this server the only etcd member (keeping its data, or --cluster-reset-restore-path's), then exit")
	fs.StringVar(&s.ClusterResetRestorePath, "cluster-reset-restore-path", "", "snapshot file that --cluster-reset restores")
	fs.StringArrayVar(&s.EtcdArgs, "etcd-arg", []string{}, "extra embedded etcd setting, key=value (repeatable)")
	fs.BoolVar(&s.EtcdExposeMetrics, "etcd-expose-metrics", false, "serve embedded etcd's metrics on every address, not only loopback")
	fs.BoolVar(&s.EtcdDisableSnapshots, "etcd-disable-snapshots", false, "take no scheduled snapshots")
	fs.StringVar(&s.EtcdSnapshotScheduleCron, "etcd-snapshot-schedule-cron", "0 */12 * * *", "when scheduled snapshots are taken, in cron syntax")
	fs.IntVar(&s.EtcdSnapshotRetention, "etcd-snapshot-retention", 5, "how many scheduled snapshots of this node to keep")
	fs.StringVar(&s.EtcdSnapshotDir, "etcd-snapshot-dir", "", "directory for snapshots (default: <data-dir>/server/db/snapshots)")
	fs.BoolVar(&s.EtcdSnapshotCompress, "etcd-snapshot-compress", false, "compress snapshots (zip)")
	fs.BoolVar(&s.DisableAgent, "disable-agent", false, "do not run an agent (kubelet, container runtime) on this node")
	fs.BoolVar(&s.DisableScheduler, "disable-scheduler", false, "do not run the scheduler")
	fs.BoolVar(&s.DisableControllerManager, "disable-controller-manager", false, "do not run the controller manager")
	fs.StringVar(&s.DefaultLocalStoragePath, "default-local-storage-path", "", "directory on each node for local-path volumes (default: <data-dir>/storage)")
	fs.BoolVar(&s.DisableNetworkPolicy, "disable-network-policy", false, "do not enforce NetworkPolicies on the nodes (and remove the rules)")
	fs.BoolVar(&s.DisableHelmController, "disable-helm-controller", false, "do not install HelmCharts (and remove the HelmChart CRDs; installed releases stay)")
	fs.StringSliceVar(&s.Disable, "disable", []string{}, "bundled add-on not to run, and to remove what it deployed: "+strings.Join(Addons, ", ")+" (repeatable)")
	// StringArray, not StringSlice: component flags often carry commas
	// themselves (--admission-plugins=A,B) and must not be split.
	fs.StringArrayVar(&s.KubeAPIServerArgs, "kube-apiserver-arg", []string{}, "extra kube-apiserver flag, key=value (repeatable)")
	fs.StringArrayVar(&s.KubeControllerManagerArgs, "kube-controller-manager-arg", []string{}, "extra kube-controller-manager flag, key=value (repeatable)")
	fs.StringArrayVar(&s.KubeSchedulerArgs, "kube-scheduler-arg", []string{}, "extra kube-scheduler flag, key=value (repeatable)")
	fs.BoolVar(&s.Debug, "debug", false, "turn on debug logs")
	fs.IntVarP(&s.LogLevel, "v", "v", 0, "log verbosity (klog level)")
	s.Operations.AddFlags(fs)
	s.Node.AddFlags(fs)
}

// Complete puts values into their canonical form. Call it after ApplySources
// and before Validate.
//
// A relative data-dir is made absolute against the working directory, so the
// rest of skiff never depends on the directory it was started from.
func (s *Server) Complete() error {
	if s.DataDir != "" {
		abs, err := filepath.Abs(s.DataDir)
		if err != nil {
			return fmt.Errorf("data-dir: making %q absolute: %w", s.DataDir, err)
		}
		s.DataDir = abs
	}
	// "disable: traefik, servicelb" is one comma-separated string; K3s
	// trims the spaces around each name.
	for i, name := range s.Disable {
		s.Disable[i] = strings.TrimSpace(name)
	}
	s.KubeAPIServerArgs = NormalizeArgs(s.KubeAPIServerArgs)
	s.KubeControllerManagerArgs = NormalizeArgs(s.KubeControllerManagerArgs)
	s.KubeSchedulerArgs = NormalizeArgs(s.KubeSchedulerArgs)
	s.EtcdArgs = NormalizeArgs(s.EtcdArgs)
	s.ClusterCIDR = trimList(s.ClusterCIDR)
	s.ServiceCIDR = trimList(s.ServiceCIDR)
	s.ClusterDNS = trimList(s.ClusterDNS)
	s.Node.Complete()
	return nil
}

// Validate returns every problem with s, each naming its flag. It does not
// touch the file system: whether data-dir or token-file exist is for the
// parts that use them to report.
func (s *Server) Validate() []error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }

	switch {
	case s.DataDir == "":
		add(fieldError("data-dir", "must not be empty"))
	case !filepath.IsAbs(s.DataDir):
		add(fieldError("data-dir", "must be an absolute path, got %q", s.DataDir))
	}

	if s.HTTPSListenPort < 1 || s.HTTPSListenPort > 65535 {
		add(fieldError("https-listen-port", "must be between 1 and 65535, got %d", s.HTTPSListenPort))
	}
	for _, f := range []struct{ flag, value string }{
		{"bind-address", s.BindAddress},
		{"advertise-address", s.AdvertiseAddress},
	} {
		if _, err := netip.ParseAddr(f.value); f.value != "" && err != nil {
			add(fieldError(f.flag, "invalid IP address %q", f.value))
		}
	}
	for _, san := range s.TLSSANs {
		if err := validateSAN(san); err != nil {
			add(itemError("tls-san", san, "%v", err))
		}
	}

	if p := s.DefaultLocalStoragePath; p != "" && !filepath.IsAbs(p) {
		add(fieldError("default-local-storage-path", "must be an absolute path, got %q", p))
	}
	for _, name := range s.Disable {
		if !slices.Contains(Addons, name) && !slices.Contains(K3sOnlyAddons, name) {
			add(itemError("disable", name, "unknown add-on %q (the add-ons are %s)", name, strings.Join(Addons, ", ")))
		}
	}

	clusterNets, err := ParseCIDRs(s.ClusterCIDR)
	if err != nil {
		add(fieldError("cluster-cidr", "%v", err))
	}
	serviceNets, err := ParseCIDRs(s.ServiceCIDR)
	if err != nil {
		add(fieldError("service-cidr", "%v", err))
	}
	for _, c := range clusterNets {
		for _, sv := range serviceNets {
			if c.Overlaps(sv) {
				add(fieldError("service-cidr", "%s overlaps cluster-cidr %s", sv, c))
			}
		}
	}
	if clusterNets != nil && serviceNets != nil {
		if err := checkStack(clusterNets, serviceNets); err != nil {
			add(err)
		} else if ips, err := ParseIPs(s.NodeIP); err == nil && !s.DisableAgent {
			if err := CheckNodeIPs(ips, clusterNets); err != nil {
				add(err)
			}
		}
		// An unspecified address (0.0.0.0, ::) means "detect it".
		if ip, err := netip.ParseAddr(s.AdvertiseAddress); err == nil && !ip.IsUnspecified() && ip.Unmap().Is4() != serviceNets[0].Addr().Is4() {
			add(fieldError("advertise-address", "%s is %s but service-cidr %s is %s first: the kubernetes Service needs an address of its primary family", ip, family(ip.Unmap()), joinPrefixes(serviceNets), family(serviceNets[0].Addr())))
		}
	}
	if clusterNets != nil && !s.DisableControllerManager {
		errs = append(errs, checkNodeMasks(clusterNets, s.KubeControllerManagerArgs)...)
	}
	// Without a valid service-cidr there is nothing to check cluster-dns
	// against, and the service-cidr error already says what to fix.
	if serviceNets != nil {
		for _, err := range validateClusterDNS(s.ClusterDNS, serviceNets) {
			add(fieldError("cluster-dns", "%v", err))
		}
	}

	if msgs := validation.IsDNS1123Subdomain(s.ClusterDomain); len(msgs) > 0 {
		add(fieldError("cluster-domain", "invalid domain %q: %s", s.ClusterDomain, strings.Join(msgs, "; ")))
	}
	if _, err := parseMode(s.WriteKubeconfigMode); err != nil {
		add(fieldError("write-kubeconfig-mode", "%v", err))
	}
	if s.Token != "" && s.TokenFile != "" {
		add(fieldError("token", "token and token-file are mutually exclusive; set one"))
	}
	if s.AgentToken != "" && s.AgentTokenFile != "" {
		add(fieldError("agent-token", "agent-token and agent-token-file are mutually exclusive; set one"))
	}
	if s.AgentToken != "" {
		if _, err := token.Parse(s.AgentToken); err != nil {
			add(fieldError("agent-token", "%v", err))
		}
	}
	if s.DatastoreEndpoint != "" {
		if _, err := DatastoreKind(s.DatastoreEndpoint); err != nil {
			add(fieldError("datastore-endpoint", "%v", err))
		}
	}
	errs = append(errs, s.validateCluster()...)
	for _, f := range []struct {
		flag string
		args []string
	}{
		{"kube-apiserver-arg", s.KubeAPIServerArgs},
		{"kube-controller-manager-arg", s.KubeControllerManagerArgs},
		{"kube-scheduler-arg", s.KubeSchedulerArgs},
	} {
		for _, err := range validateArgs(f.args) {
			add(fieldError(f.flag, "%v", err))
		}
	}
	if s.LogLevel < 0 {
		add(fieldError("v", "must be 0 or more, got %d", s.LogLevel))
	}
	errs = append(errs, s.Operations.Validate()...)
	errs = append(errs, s.Node.Validate()...)
	return errs
}

// KubeconfigMode is the file mode for the written kubeconfig: 0600 unless
// write-kubeconfig-mode says otherwise. An invalid mode (which Validate
// reports) also yields 0600, the safe choice.
func (s *Server) KubeconfigMode() os.FileMode {
	mode, err := parseMode(s.WriteKubeconfigMode)
	if err != nil || s.WriteKubeconfigMode == "" {
		return 0o600
	}
	return mode
}

// parseMode parses an octal permission string: "0644", "644" or "0o644".
func parseMode(s string) (os.FileMode, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	if err != nil || n > 0o777 {
		return 0, fmt.Errorf("invalid mode %q: want octal permissions from 0000 to 0777, like 0644", s)
	}
	return os.FileMode(n), nil
}

// datastoreKinds maps each endpoint scheme to what serves it. kine also
// accepts "postgresql" and "unixs", so we do too.
var datastoreKinds = map[string]string{
	"sqlite":     "sqlite",
	"postgres":   "postgres",
	"postgresql": "postgres",
	"mysql":      "mysql",
	"http":       "etcd",
	"https":      "etcd",
	"unix":       "etcd",
	"unixs":      "etcd",
}

const supportedSchemes = "sqlite, postgres, mysql, http, https, unix"

// DatastoreKind says which datastore an endpoint names: "sqlite", "postgres",
// "mysql" or "etcd". The empty endpoint is the embedded SQLite database.
// Errors show the endpoint with its password redacted.
func DatastoreKind(endpoint string) (string, error) {
	if endpoint == "" {
		return "sqlite", nil
	}
	scheme, _, ok := strings.Cut(endpoint, "://")
	// A "scheme" with odd characters is more likely part of a DSN such as
	// user:pass@tcp(host)/db, so do not quote it back.
	if !ok || !isScheme(scheme) {
		return "", fmt.Errorf("%q has no URL scheme; supported schemes: %s", RedactURL(endpoint), supportedSchemes)
	}
	kind, ok := datastoreKinds[scheme]
	if !ok {
		return "", fmt.Errorf("unsupported scheme %q in %q; supported schemes: %s", scheme, RedactURL(endpoint), supportedSchemes)
	}
	return kind, nil
}

// isScheme reports whether s is a URL scheme per RFC 3986.
func isScheme(s string) bool {
	for i, c := range s {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// NormalizeArgs strips one leading "--" from each extra component argument,
// so "--v=2" and "v=2" mean the same. Other entries, empty ones included,
// are kept as they are for Validate to judge.
func NormalizeArgs(args []string) []string {
	if args == nil {
		return nil
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.TrimPrefix(a, "--")
	}
	return out
}

// FieldError is a problem Validate found with one option: the flag name, then
// what is wrong with it. Origins.Explain adds the file it came from.
type FieldError struct {
	Flag string
	Msg  string
	// Value is the one list item at fault, when the error is about one;
	// Origins.Explain then names that item's file.
	Value string
}

func (e *FieldError) Error() string { return e.Flag + ": " + e.Msg }

// fieldError is a Validate error: the flag name, then what is wrong with it.
func fieldError(flag, format string, args ...any) error {
	return &FieldError{Flag: flag, Msg: fmt.Sprintf(format, args...)}
}

// itemError is a Validate error about one item of a list option.
func itemError(flag, item, format string, args ...any) error {
	return &FieldError{Flag: flag, Value: item, Msg: fmt.Sprintf(format, args...)}
}

func validateArgs(args []string) []error {
	var errs []error
	for _, a := range args {
		key, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case strings.TrimSpace(a) == "":
			errs = append(errs, fmt.Errorf("empty entry"))
		case key == "" || strings.HasPrefix(key, "-") || strings.ContainsAny(key, " \t\n"):
			errs = append(errs, fmt.Errorf("%q is not key=value or key", a))
		}
	}
	return errs
}

func validateSAN(san string) error {
	if san == "" {
		return fmt.Errorf("empty entry")
	}
	if _, err := netip.ParseAddr(san); err == nil {
		return nil
	}
	msgs := validation.IsDNS1123Subdomain(san)
	if strings.HasPrefix(san, "*.") {
		msgs = validation.IsWildcardDNS1123Subdomain(san)
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%q is neither an IP address nor a DNS name: %s", san, strings.Join(msgs, "; "))
	}
	return nil
}

// ParseCIDRs parses a single-stack CIDR or a dual-stack pair of one IPv4
// and one IPv6 CIDR, in the order given (the first is the primary family;
// Server.Validate refuses an IPv6 one). The prefixes come back masked so
// that overlap checks compare networks.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	if s == "" {
		return nil, fmt.Errorf("must not be empty")
	}
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%q: want one CIDR or an IPv4,IPv6 pair", s)
	}
	var nets []netip.Prefix
	for _, p := range parts {
		prefix, err := netip.ParsePrefix(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR %q", strings.TrimSpace(p))
		}
		nets = append(nets, prefix.Masked())
	}
	if len(nets) == 2 && nets[0].Addr().Is4() == nets[1].Addr().Is4() {
		return nil, fmt.Errorf("%q: a dual-stack pair needs one IPv4 and one IPv6 CIDR", s)
	}
	return nets, nil
}

// validateClusterDNS accepts one IP, or one per family for dual-stack, each
// inside service-cidr and not one of the addresses Kubernetes reserves there.
func validateClusterDNS(s string, serviceNets []netip.Prefix) []error {
	if s == "" {
		return []error{fmt.Errorf("must not be empty")}
	}
	var errs []error
	seen := map[bool]bool{} // families, keyed by Is4
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		ip, err := netip.ParseAddr(part)
		if err != nil {
			errs = append(errs, fmt.Errorf("invalid IP address %q", part))
			continue
		}
		if ip = ip.Unmap(); seen[ip.Is4()] {
			errs = append(errs, fmt.Errorf("%q: at most one %s address (one per family for dual-stack)", s, family(ip)))
			continue
		}
		if len(seen) == 0 && ip.Is4() != serviceNets[0].Addr().Is4() {
			errs = append(errs, fmt.Errorf("%q: the first address must be %s, service-cidr %s's primary family (the kube-dns Service has it)", s, family(serviceNets[0].Addr()), joinPrefixes(serviceNets)))
		}
		seen[ip.Is4()] = true
		var inside *netip.Prefix
		for i := range serviceNets {
			if serviceNets[i].Contains(ip) {
				inside = &serviceNets[i]
			}
		}
		switch {
		case inside == nil:
			errs = append(errs, fmt.Errorf("%s is not inside service-cidr %s; change cluster-dns along with service-cidr", ip, joinPrefixes(serviceNets)))
		case ip == inside.Addr():
			errs = append(errs, fmt.Errorf("%s is the network address of service-cidr %s", ip, inside))
		case ip == inside.Addr().Next():
			errs = append(errs, fmt.Errorf("%s is reserved for the kubernetes API service (first address of service-cidr %s)", ip, inside))
		}
	}
	return errs
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
