package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// Every spelling of a boolean that K3s accepts in a config file: YAML 1.1's
// unquoted words (K3s reads with yaml.v2), then strconv.ParseBool's.
func TestFileBooleansAsK3s(t *testing.T) {
	truthy := []string{"y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE", "t", "T", "1", `"true"`, `"1"`}
	falsy := []string{"n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE", "f", "F", "0", `"false"`}
	refused := []string{`"yes"`, `'on'`, "enabled", "2", "~"}
	check := func(value string) (bool, error) {
		dir := t.TempDir()
		path := filepath.Join(dir, "config.yaml")
		writeFiles(t, dir, map[string]string{"config.yaml": "debug: " + value + "\n"})
		s, err := loadServer(t, nil, nil, Sources{ConfigFile: path, ConfigFileExplicit: true})
		if err != nil {
			return false, err
		}
		return s.Debug, nil
	}
	for _, v := range truthy {
		if got, err := check(v); err != nil || !got {
			t.Errorf("debug: %s → %v, %v; want true", v, got, err)
		}
	}
	for _, v := range falsy {
		if got, err := check(v); err != nil || got {
			t.Errorf("debug: %s → %v, %v; want false", v, got, err)
		}
	}
	for _, v := range refused {
		_, err := check(v)
		if err == nil || !strings.Contains(err.Error(), "config.yaml: key \"debug\"") {
			t.Errorf("debug: %s → %v; want an error naming the file and key", v, err)
		}
	}
}

// YAML 1.1 words are booleans only for boolean options: a string option
// keeps the text as written.
func TestYAML11WordsStayStringsForStrings(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.yaml": "node-name: yes\ncluster-domain: on\n"})
	s, err := loadServer(t, nil, nil, Sources{ConfigFile: filepath.Join(dir, "config.yaml"), ConfigFileExplicit: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.NodeName != "yes" || s.ClusterDomain != "on" {
		t.Errorf("node-name %q, cluster-domain %q; want the text as written", s.NodeName, s.ClusterDomain)
	}
}

// Documents that are empty or only comments are skipped wherever they are.
func TestEmptyDocumentsIgnored(t *testing.T) {
	for name, content := range map[string]string{
		"trailing marker":        "debug: true\n---\n",
		"leading marker":         "---\ndebug: true\n",
		"both":                   "---\ndebug: true\n---\n",
		"comment-only document":  "# a\n---\ndebug: true\n---\n# b\n",
		"null document":          "~\n---\ndebug: true\n",
		"end-of-document marker": "debug: true\n...\n",
		"empty after settings":   "debug: true\n---\n---\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"config.yaml": content})
			s, err := loadServer(t, nil, nil, Sources{ConfigFile: filepath.Join(dir, "config.yaml"), ConfigFileExplicit: true})
			if err != nil {
				t.Fatal(err)
			}
			if !s.Debug {
				t.Error("debug not set")
			}
		})
	}
}

// A K3s component skiff does not ship is accepted, with one warning that
// names the file it came from.
func TestK3sOnlyAddonWarns(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"config.yaml":          "disable: traefik\n",
		"config.yaml.d/a.yaml": "disable+: [servicelb, runtimes]\n",
	})
	var s Server
	fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
	s.AddFlags(fs)
	origins, err := LoadSources(fs, Sources{ConfigFile: filepath.Join(dir, "config.yaml"), ConfigFileExplicit: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(); err != nil {
		t.Fatal(err)
	}
	if errs := s.Validate(); len(errs) > 0 {
		t.Fatalf("refused: %v", errs)
	}
	warns := origins.Explain(s.Warnings())
	if len(warns) != 2 {
		t.Fatalf("want 2 warnings, got %v", warns)
	}
	for i, want := range []string{
		filepath.Join(dir, "config.yaml") + `: key "disable": disable: "traefik" is a K3s component that skiff does not ship`,
		filepath.Join(dir, "config.yaml.d/a.yaml") + `: key "disable+": disable: "runtimes"`,
	} {
		if !strings.HasPrefix(warns[i].Error(), want) {
			t.Errorf("warning %d = %q, want it to start with %q", i, warns[i], want)
		}
	}
	if !s.Disabled("servicelb") {
		t.Error("servicelb not disabled")
	}
}

// Validate's errors name the environment variable or the file the value
// came from; a value from the command line gets no prefix.
func TestExplainNamesTheSource(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.yaml": "cluster-domain: Bad_Domain\ntls-san: [ok.example, 'bad san']\n"})
	var s Server
	fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
	s.AddFlags(fs)
	if err := fs.Parse([]string{"--https-listen-port=0"}); err != nil {
		t.Fatal(err)
	}
	origins, err := LoadSources(fs, Sources{
		ConfigFile: filepath.Join(dir, "config.yaml"), ConfigFileExplicit: true,
		LookupEnv: mapEnv(map[string]string{"SKIFF_NODE_NAME": "edge_node01"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Complete()
	got := errors.Join(origins.Explain(s.Validate())...).Error()
	for _, want := range []string{
		"\nhttps-listen-port: must be between",
		filepath.Join(dir, "config.yaml") + `: key "tls-san": tls-san: "bad san"`,
		filepath.Join(dir, "config.yaml") + `: key "cluster-domain": cluster-domain:`,
		`environment variable SKIFF_NODE_NAME: node-name: invalid node name "edge_node01"`,
	} {
		if !strings.Contains("\n"+got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
}
