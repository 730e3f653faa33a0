package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChooseResolvConf(t *testing.T) {
	const real = "nameserver 192.0.2.53\nnameserver 2001:db8::53\n"
	for _, tc := range []struct {
		name string
		// host and resolved are the files' contents; "-" means missing.
		host, resolved string
		// want is "host", "resolved" or "generated".
		want string
		// lines must be in a generated file, in this order; absent must not.
		lines, absent []string
		// warn must be in the warning ("" for none).
		warn []string
	}{
		{name: "plain host file", host: "nameserver 10.0.0.2\n", resolved: "-", want: "host"},
		{name: "comments, options and search lines", host: "# by DHCP\n; old style\ndomain example.org\nsearch example.org corp.example\noptions ndots:2 timeout:1\nnameserver 10.0.0.2\n", resolved: "-", want: "host"},
		{name: "an IPv4 link-local cloud resolver", host: "nameserver 169.254.169.253\n", resolved: "-", want: "host"},
		{name: "systemd-resolved stub with its file", host: "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n", resolved: real, want: "resolved"},
		{
			name: "systemd-resolved stub without its file", host: "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n", resolved: "-", want: "generated",
			lines:  []string{"options edns0 trust-ad", "search lan", "nameserver 10.43.0.10"},
			absent: []string{"127.0.0.53"},
			warn:   []string{"127.0.0.53", "cluster DNS (10.43.0.10)", "--resolv-conf"},
		},
		{
			name: "dnsmasq on 127.0.0.1", host: "nameserver 127.0.0.1\n", resolved: "-", want: "generated",
			lines: []string{"nameserver 10.43.0.10"}, absent: []string{"127.0.0.1"},
			warn: []string{"cannot reach (127.0.0.1)", "--resolv-conf"},
		},
		{
			name: "any 127/8 address and IPv6 loopback", host: "nameserver 127.0.1.1\nnameserver ::1\n", resolved: "-", want: "generated",
			lines: []string{"nameserver 10.43.0.10"}, absent: []string{"127.0.1.1", "::1"},
			warn: []string{"127.0.1.1, ::1"},
		},
		{
			name: "a systemd file that is loopback too is no help", host: "nameserver 127.0.0.53\n", resolved: "nameserver 127.0.0.1\n", want: "generated",
			lines: []string{"nameserver 10.43.0.10"},
		},
		{
			name: "loopback and real servers mixed", host: "search corp.example\nnameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver ::1\nnameserver 10.0.0.3\n", resolved: "-", want: "generated",
			lines:  []string{"search corp.example", "nameserver 10.0.0.2", "nameserver 10.0.0.3"},
			absent: []string{"127.0.0.1", "::1", "10.43.0.10"},
			warn:   []string{"127.0.0.1, ::1", "without them", "--resolv-conf"},
		},
		{
			name: "IPv6 link-local, unspecified and multicast", host: "nameserver fe80::1%eth0\nnameserver 0.0.0.0\nnameserver ff02::fb\nnameserver 10.0.0.2\n", resolved: "-", want: "generated",
			lines: []string{"nameserver 10.0.0.2"}, absent: []string{"fe80::1", "0.0.0.0", "ff02::fb"},
		},
		{name: "an empty file", host: "", resolved: "-", want: "generated", lines: []string{"nameserver 10.43.0.10"}, warn: []string{"names no nameserver"}},
		{name: "only comments and search", host: "# nothing\nsearch lan\n", resolved: "-", want: "generated", lines: []string{"search lan", "nameserver 10.43.0.10"}, absent: []string{"# nothing"}},
		{name: "no host file", host: "-", resolved: "-", want: "generated", lines: []string{"nameserver 10.43.0.10"}, warn: []string{"does not exist"}},
		{name: "no host file, systemd's present", host: "-", resolved: real, want: "resolved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in := ResolvConfInput{
				Host:       filepath.Join(dir, "etc-resolv.conf"),
				Resolved:   filepath.Join(dir, "resolved.conf"),
				Generated:  filepath.Join(dir, "agent", "etc", "resolv.conf"),
				ClusterDNS: []string{"10.43.0.10"},
			}
			for path, content := range map[string]string{in.Host: tc.host, in.Resolved: tc.resolved} {
				if content != "-" {
					if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := ChooseResolvConf(in)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"host": in.Host, "resolved": in.Resolved, "generated": in.Generated}[tc.want]
			if got.Path != want {
				t.Fatalf("path %s, want %s (%s)", got.Path, want, tc.want)
			}
			if (got.Content != nil) != (tc.want == "generated") {
				t.Errorf("content %q for a %s file", got.Content, tc.want)
			}
			if (got.Warning != "") != (tc.want == "generated") {
				t.Errorf("warning %q for a %s file", got.Warning, tc.want)
			}
			for _, w := range tc.warn {
				if !strings.Contains(got.Warning, w) {
					t.Errorf("warning %q lacks %q", got.Warning, w)
				}
			}
			var lines []string
			for _, l := range strings.Split(string(got.Content), "\n") {
				if l != "" && !strings.HasPrefix(l, "#") {
					lines = append(lines, l)
				}
			}
			if tc.lines != nil && strings.Join(lines, "\n") != strings.Join(tc.lines, "\n") {
				t.Errorf("generated lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(tc.lines, "\n"))
			}
			for _, a := range tc.absent {
				if strings.Contains(strings.Join(lines, "\n"), a) {
					t.Errorf("generated file keeps %q:\n%s", a, got.Content)
				}
			}
		})
	}
}

func TestChooseResolvConfGivenFileIsUsedAsIs(t *testing.T) {
	dir := t.TempDir()
	given := filepath.Join(dir, "pods.conf")
	host := filepath.Join(dir, "host.conf")
	_ = os.WriteFile(host, []byte("nameserver 10.0.0.2\n"), 0o644)
	_ = os.WriteFile(given, []byte("nameserver 192.0.2.53\n"), 0o644)
	in := ResolvConfInput{Given: given, Host: host, Generated: filepath.Join(dir, "gen")}
	got, err := ChooseResolvConf(in)
	if err != nil || got.Path != given || got.Content != nil || got.Warning != "" {
		t.Errorf("given file: %+v %v", got, err)
	}

	// Loopback in a given file is the user's choice (hostNetwork pods reach
	// it), said once.
	_ = os.WriteFile(given, []byte("nameserver 127.0.0.1\n"), 0o644)
	got, err = ChooseResolvConf(in)
	if err != nil || got.Path != given || got.Content != nil || !strings.Contains(got.Warning, "--resolv-conf "+given) {
		t.Errorf("given loopback file: %+v %v", got, err)
	}

	in.Given = filepath.Join(dir, "missing.conf")
	if _, err := ChooseResolvConf(in); err == nil || !strings.Contains(err.Error(), "resolv-conf") {
		t.Errorf("missing given file: %v, want an error naming resolv-conf", err)
	}
	if err := CheckResolvConf(in.Given); err == nil || !strings.HasPrefix(err.Error(), "resolv-conf: ") || !strings.Contains(err.Error(), "missing.conf") {
		t.Errorf("CheckResolvConf(missing) = %v, want one naming the flag and the file", err)
	}
	if err := CheckResolvConf(dir); err == nil {
		t.Error("CheckResolvConf accepts a directory")
	}
	if err := CheckResolvConf(""); err != nil {
		t.Errorf("CheckResolvConf(unset) = %v", err)
	}
}
