package config

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// defaults returns a Server holding only the flag defaults.
func defaults(t *testing.T) Server {
	t.Helper()
	var s Server
	s.AddFlags(pflag.NewFlagSet("server", pflag.ContinueOnError))
	return s
}

func TestDefaultsAreValid(t *testing.T) {
	s := defaults(t)
	if errs := s.Validate(); len(errs) > 0 {
		t.Errorf("defaults do not validate: %v", errs)
	}
}

// Validate reports every problem at once, each starting with its flag.
func TestValidateCollectsAll(t *testing.T) {
	s := defaults(t)
	s.DataDir = "relative/dir"
	s.HTTPSListenPort = 0
	s.BindAddress = "not-an-ip"
	s.TLSSANs = []string{""}
	s.ServiceCIDR = "bogus"
	s.ClusterDomain = "Bad_Domain"
	s.WriteKubeconfigMode = "rw-r--r--"
	s.Token, s.TokenFile = "t", "/f"
	s.DatastoreEndpoint = "oracle://u:pw@h/db"
	s.KubeSchedulerArgs = []string{"=x"}
	s.LogLevel = -1
	want := []string{
		"data-dir:", "https-listen-port:", "bind-address:", "tls-san:", "service-cidr:",
		"cluster-domain:", "write-kubeconfig-mode:", "token:", "datastore-endpoint:",
		"kube-scheduler-arg:", "v:",
	}
	errs := s.Validate()
	var prefixes []string
	for _, err := range errs {
		prefixes = append(prefixes, strings.SplitAfter(err.Error(), ":")[0])
	}
	if !slices.Equal(prefixes, want) {
		t.Errorf("got errors for %q, want %q\nerrors: %v", prefixes, want, errs)
	}
}

func TestComplete(t *testing.T) {
	s := defaults(t)
	s.DataDir = "state/../skiff"
	s.KubeAPIServerArgs = []string{"--v=2", "audit-log-maxage=30"}
	if err := s.Complete(); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := wd + "/skiff"; s.DataDir != want {
		t.Errorf("data-dir = %q, want %q", s.DataDir, want)
	}
	if want := []string{"v=2", "audit-log-maxage=30"}; !slices.Equal(s.KubeAPIServerArgs, want) {
		t.Errorf("kube-apiserver-arg = %q, want %q", s.KubeAPIServerArgs, want)
	}
}

func TestKubeconfigMode(t *testing.T) {
	for mode, want := range map[string]os.FileMode{
		"":      0o600,
		"0644":  0o644,
		"644":   0o644,
		"0o640": 0o640,
		"0999":  0o600, // invalid: the safe default
	} {
		s := Server{WriteKubeconfigMode: mode}
		if got := s.KubeconfigMode(); got != want {
			t.Errorf("KubeconfigMode(%q) = %o, want %o", mode, got, want)
		}
	}
}

func TestDatastoreKind(t *testing.T) {
	tests := []struct {
		endpoint, want, wantErr string
	}{
		{endpoint: "", want: "sqlite"},
		{endpoint: "sqlite:///var/lib/skiff/db/state.db?_journal=WAL", want: "sqlite"},
		{endpoint: "postgres://u:p@db:5432/skiff", want: "postgres"},
		{endpoint: "postgresql://db/skiff", want: "postgres"},
		{endpoint: "mysql://u:p@tcp(db:3306)/skiff", want: "mysql"},
		{endpoint: "https://etcd-1:2379,https://etcd-2:2379", want: "etcd"},
		{endpoint: "unix:///run/etcd.sock", want: "etcd"},
		{endpoint: "mongodb://u:topsecret@db/skiff", wantErr: `unsupported scheme "mongodb" in "mongodb://u:xxxxx@db/skiff"; supported schemes: sqlite, postgres, mysql, http, https, unix`},
		{endpoint: "u:topsecret@tcp(db:3306)/skiff", wantErr: `"u:xxxxx@tcp(db:3306)/skiff" has no URL scheme`},
		// Not a scheme: the text before "://" must not be quoted back.
		{endpoint: "u:top://secret@db", wantErr: `"u:xxxxx@db" has no URL scheme`},
	}
	for _, tt := range tests {
		got, err := DatastoreKind(tt.endpoint)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("DatastoreKind(%q) error = %v, want one containing %q", tt.endpoint, err, tt.wantErr)
		case tt.wantErr != "" && strings.Contains(err.Error(), "secret"):
			t.Errorf("DatastoreKind(%q) error %q reveals the password", tt.endpoint, err)
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("DatastoreKind(%q) = %q, %v; want %q", tt.endpoint, got, err, tt.want)
		}
	}
}

func TestNormalizeArgs(t *testing.T) {
	got := NormalizeArgs([]string{"--v=2", "v=2", "--anonymous-auth", "", "-x"})
	want := []string{"v=2", "v=2", "anonymous-auth", "", "-x"}
	if !slices.Equal(got, want) {
		t.Errorf("NormalizeArgs = %q, want %q", got, want)
	}
	if NormalizeArgs(nil) != nil {
		t.Error("NormalizeArgs(nil) != nil")
	}
}
