package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

var update = flag.Bool("update", false, "rewrite the testdata/*.golden.json files")

// loadServer runs the whole pipeline a command runs, with only the given
// command-line args, environment and config file as inputs.
func loadServer(t *testing.T, args []string, env map[string]string, src Sources) (*Server, error) {
	t.Helper()
	var s Server
	fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
	s.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	src.LookupEnv = mapEnv(env)
	origins, err := LoadSources(fs, src)
	if err != nil {
		return nil, err
	}
	if err := s.Complete(); err != nil {
		return nil, err
	}
	if err := errors.Join(origins.Explain(s.Validate())...); err != nil {
		return nil, err
	}
	return &s, nil
}

func mapEnv(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// TestValidFiles loads each testdata/valid-*.yaml (with its .d/ drop-ins, if
// any) and compares the result with valid-*.golden.json.
func TestValidFiles(t *testing.T) {
	paths, err := filepath.Glob("testdata/valid-*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no valid test files: %v", err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s, err := loadServer(t, nil, nil, Sources{ConfigFile: path, ConfigFileExplicit: true})
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			got, err := json.MarshalIndent(s, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := strings.TrimSuffix(path, ".yaml") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("result differs from %s (run go test -update to accept):\n got: %s\nwant: %s", golden, got, want)
			}
		})
	}
}

// TestInvalidFiles loads each testdata/invalid-*.yaml and expects an error
// containing the text after "# error: " on its first line. Optional
// "# secret: " lines name text that must not appear in the error.
func TestInvalidFiles(t *testing.T) {
	paths, err := filepath.Glob("testdata/invalid-*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no invalid test files: %v", err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			wantErr, secrets := readExpectations(t, path)
			_, err := loadServer(t, nil, nil, Sources{ConfigFile: path, ConfigFileExplicit: true})
			if err == nil {
				t.Fatalf("no error, want one containing %q", wantErr)
			}
			if !strings.Contains(err.Error(), wantErr) {
				t.Errorf("error %q does not contain %q", err, wantErr)
			}
			for _, secret := range secrets {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals the secret %q", err, secret)
				}
			}
		})
	}
}

func readExpectations(t *testing.T, path string) (wantErr string, secrets []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		line := sc.Text()
		if s, ok := strings.CutPrefix(line, "# error: "); ok && first {
			wantErr = s
		} else if s, ok := strings.CutPrefix(line, "# secret: "); ok {
			secrets = append(secrets, s)
		}
	}
	if wantErr == "" {
		t.Fatalf("%s: first line must be \"# error: <substring>\"", path)
	}
	return wantErr, secrets
}
