package controlplane

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestLayoutPathsAreDistinctAndInPlace guards against two files sharing a
// path (one would overwrite the other) and against a file leaving its
// directory (the modes of server/tls and server/cred protect keys).
func TestLayoutPathsAreDistinctAndInPlace(t *testing.T) {
	dataDir := t.TempDir()
	l := Layout{DataDir: dataDir}

	if got, want := l.TokenFile(), filepath.Join(dataDir, "server", "token"); got != want {
		t.Errorf("TokenFile() = %q, want %q (users are told to read it there)", got, want)
	}

	type entry struct{ name, path, dir string }
	var all []entry
	for name, p := range map[string]Pair{
		"ServerCA": l.ServerCA(), "ClientCA": l.ClientCA(), "RequestHeaderCA": l.RequestHeaderCA(),
		"ServingAPIServer": l.ServingAPIServer(), "ClientAdmin": l.ClientAdmin(),
		"ClientController": l.ClientController(), "ClientScheduler": l.ClientScheduler(),
		"ClientKubeAPIServer": l.ClientKubeAPIServer(), "ClientAuthProxy": l.ClientAuthProxy(),
	} {
		if !strings.HasSuffix(p.Cert, ".crt") || !strings.HasSuffix(p.Key, ".key") {
			t.Errorf("%s = %+v, want a .crt and a .key", name, p)
		}
		all = append(all, entry{name + ".Cert", p.Cert, l.TLSDir()}, entry{name + ".Key", p.Key, l.TLSDir()})
	}
	all = append(all,
		entry{"ServiceAccountKey", l.ServiceAccountKey(), l.TLSDir()},
		entry{"ServiceAccountPub", l.ServiceAccountPub(), l.TLSDir()},
		entry{"AdminKubeconfig", l.AdminKubeconfig(), l.CredDir()},
		entry{"ControllerKubeconfig", l.ControllerKubeconfig(), l.CredDir()},
		entry{"SchedulerKubeconfig", l.SchedulerKubeconfig(), l.CredDir()},
		entry{"AuthenticationConfig", l.AuthenticationConfig(), l.EtcDir()},
		entry{"TokenFile", l.TokenFile(), l.ServerDir()},
		entry{"LockFile", l.LockFile(), l.ServerDir()},
		entry{"IDFile", l.IDFile(), l.ServerDir()},
	)
	for _, d := range []string{l.TLSDir(), l.CredDir(), l.EtcDir()} {
		if filepath.Dir(d) != l.ServerDir() {
			t.Errorf("%s is not directly in %s", d, l.ServerDir())
		}
	}
	if filepath.Dir(l.ServerDir()) != dataDir {
		t.Errorf("ServerDir() = %s, not in data dir %s", l.ServerDir(), dataDir)
	}

	seen := map[string]string{}
	for _, e := range all {
		if filepath.Dir(e.path) != e.dir {
			t.Errorf("%s = %s, want it directly in %s", e.name, e.path, e.dir)
		}
		if other, dup := seen[e.path]; dup {
			t.Errorf("%s and %s share the path %s", e.name, other, e.path)
		}
		seen[e.path] = e.name
	}
}
