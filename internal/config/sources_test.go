package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// writeFiles creates files (path relative to dir → content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPrecedence checks each level against the one below it, for a scalar
// (data-dir) and a list (tls-san): default < file < drop-ins in lexical
// order < environment < command line.
func TestPrecedence(t *testing.T) {
	base := map[string]string{
		"config.yaml": "data-dir: /file\ntls-san: [file]\n",
	}
	dropIns := map[string]string{
		"config.yaml":                 "data-dir: /file\ntls-san: [file]\n",
		"config.yaml.d/20-b.yml":      "data-dir: /d20\n",
		"config.yaml.d/10-a.yaml":     "data-dir: /d10\ntls-san: [d10]\n",
		"config.yaml.d/30-c.yaml.bak": "data-dir: /ignored\n",
	}
	tests := []struct {
		name     string
		files    map[string]string
		env      map[string]string
		args     []string
		wantDir  string
		wantSANs []string
	}{
		{name: "default", wantDir: "/var/lib/skiff", wantSANs: []string{}},
		{name: "file beats default", files: base, wantDir: "/file", wantSANs: []string{"file"}},
		{name: "drop-ins beat file, later drop-in wins", files: dropIns, wantDir: "/d20", wantSANs: []string{"d10"}},
		{
			name:     "drop-in appends with name+",
			files:    merge(dropIns, map[string]string{"config.yaml.d/20-b.yml": "tls-san+: [d20]\n"}),
			wantDir:  "/d10",
			wantSANs: []string{"d10", "d20"},
		},
		{
			name:     "environment beats files",
			files:    dropIns,
			env:      map[string]string{"SKIFF_DATA_DIR": "/env", "SKIFF_TLS_SAN": "e1,e2"},
			wantDir:  "/env",
			wantSANs: []string{"e1", "e2"},
		},
		{
			name:     "empty environment variable counts as unset",
			files:    dropIns,
			env:      map[string]string{"SKIFF_DATA_DIR": "", "SKIFF_TLS_SAN": ""},
			wantDir:  "/d20",
			wantSANs: []string{"d10"},
		},
		{
			name:     "command line beats environment",
			files:    dropIns,
			env:      map[string]string{"SKIFF_DATA_DIR": "/env", "SKIFF_TLS_SAN": "e1,e2"},
			args:     []string{"--data-dir=/flag", "--tls-san", "f1", "--tls-san=f2"},
			wantDir:  "/flag",
			wantSANs: []string{"f1", "f2"},
		},
		{
			name:     "empty list in a drop-in clears the list",
			files:    merge(base, map[string]string{"config.yaml.d/50.yaml": "tls-san: []\n"}),
			wantDir:  "/file",
			wantSANs: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			src := Sources{ConfigFile: filepath.Join(dir, "config.yaml")}
			s, err := loadServer(t, tt.args, tt.env, src)
			if err != nil {
				t.Fatal(err)
			}
			if s.DataDir != tt.wantDir {
				t.Errorf("data-dir = %q, want %q", s.DataDir, tt.wantDir)
			}
			if !slices.Equal(s.TLSSANs, tt.wantSANs) {
				t.Errorf("tls-san = %q, want %q", s.TLSSANs, tt.wantSANs)
			}
		})
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// StringArray flags are split on commas from the environment (documented)
// but never from files.
func TestStringArrayFromEnvAndFile(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"config.yaml": "kube-scheduler-arg: [\"feature-gates=A=true,B=false\"]\n",
	})
	env := map[string]string{"SKIFF_KUBE_APISERVER_ARG": "--v=2,anonymous-auth=false"}
	s, err := loadServer(t, nil, env, Sources{ConfigFile: filepath.Join(dir, "config.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"v=2", "anonymous-auth=false"}; !slices.Equal(s.KubeAPIServerArgs, want) {
		t.Errorf("kube-apiserver-arg = %q, want %q", s.KubeAPIServerArgs, want)
	}
	if want := []string{"feature-gates=A=true,B=false"}; !slices.Equal(s.KubeSchedulerArgs, want) {
		t.Errorf("kube-scheduler-arg = %q, want %q", s.KubeSchedulerArgs, want)
	}
}

func TestConfigFileMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "config.yaml")

	s, err := loadServer(t, nil, nil, Sources{ConfigFile: missing})
	if err != nil {
		t.Fatalf("missing default config file: %v", err)
	}
	if s.DataDir != "/var/lib/skiff" {
		t.Errorf("data-dir = %q, want the default", s.DataDir)
	}

	_, err = loadServer(t, nil, nil, Sources{ConfigFile: missing, ConfigFileExplicit: true})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing explicit config file: error %v does not name %s", err, missing)
	}
}

// The default config file may be missing while its drop-ins exist.
func TestDropInsWithoutConfigFile(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.yaml.d/10.yaml": "debug: true\n"})
	s, err := loadServer(t, nil, nil, Sources{ConfigFile: filepath.Join(dir, "config.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Debug {
		t.Error("debug from the drop-in was not applied")
	}
}

func TestEnvErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
		secret  string
	}{
		{
			name:    "invalid int",
			env:     map[string]string{"SKIFF_HTTPS_LISTEN_PORT": "abc"},
			wantErr: `environment variable SKIFF_HTTPS_LISTEN_PORT: invalid value "abc": strconv.ParseInt`,
		},
		{
			name:    "invalid bool",
			env:     map[string]string{"SKIFF_DISABLE_AGENT": "maybe"},
			wantErr: `environment variable SKIFF_DISABLE_AGENT: invalid value "maybe"`,
		},
		{
			name:    "secret in a validation error",
			env:     map[string]string{"SKIFF_DATASTORE_ENDPOINT": "ftp://u:hunter2@db/x"},
			wantErr: `datastore-endpoint: unsupported scheme "ftp" in "ftp://u:xxxxx@db/x"`,
			secret:  "hunter2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadServer(t, nil, tt.env, Sources{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error %q reveals the secret", err)
			}
		})
	}
}

// Command flags are not settable from the environment or files.
func TestCommandFlagsIgnoreEnv(t *testing.T) {
	fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
	var path string
	AddConfigFlag(fs, &path)
	help := fs.Bool("help", false, "")
	env := mapEnv(map[string]string{"SKIFF_HELP": "true", "SKIFF_CONFIG": "/elsewhere.yaml"})
	if err := ApplySources(fs, Sources{LookupEnv: env}); err != nil {
		t.Fatal(err)
	}
	if *help || path != DefaultConfigFile {
		t.Errorf("help = %v, config = %q: command flags were set from the environment", *help, path)
	}
}

// Parse errors quote their input; for a secret flag the value must be
// redacted there too.
func TestInvalidValueRedactsSecrets(t *testing.T) {
	cause := errors.New(`parsing "K10hunter2": bad`)
	err := invalidValue("token", "K10hunter2", cause)
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q reveals the token", err)
	}
	if !strings.Contains(err.Error(), "<redacted>") {
		t.Errorf("error %q does not say the value was redacted", err)
	}
	if err := invalidValue("data-dir", "x", cause); !errors.Is(err, cause) {
		t.Errorf("error %q does not wrap its cause", err)
	}
}

func TestSourcesFromFlags(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		env          map[string]string
		wantFile     string
		wantExplicit bool
	}{
		{name: "default", wantFile: DefaultConfigFile},
		{name: "env", env: map[string]string{"SKIFF_CONFIG": "/env.yaml"}, wantFile: "/env.yaml", wantExplicit: true},
		{name: "flag beats env", args: []string{"-c", "/flag.yaml"}, env: map[string]string{"SKIFF_CONFIG": "/env.yaml"}, wantFile: "/flag.yaml", wantExplicit: true},
		{name: "flag naming the default is explicit", args: []string{"--config", DefaultConfigFile}, wantFile: DefaultConfigFile, wantExplicit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
			var path string
			AddConfigFlag(fs, &path)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			src := SourcesFromFlags(fs, mapEnv(tt.env))
			if src.ConfigFile != tt.wantFile || src.ConfigFileExplicit != tt.wantExplicit {
				t.Errorf("got %q explicit=%v, want %q explicit=%v", src.ConfigFile, src.ConfigFileExplicit, tt.wantFile, tt.wantExplicit)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"data-dir":           "SKIFF_DATA_DIR",
		"tls-san":            "SKIFF_TLS_SAN",
		"kube-apiserver-arg": "SKIFF_KUBE_APISERVER_ARG",
		"v":                  "SKIFF_V",
	} {
		if got := EnvName(flag); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flag, got, want)
		}
	}
}
