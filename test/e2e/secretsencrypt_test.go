package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// encStatus is `skiff secrets-encrypt status -o json`.
type encStatus struct {
	Enabled bool   `json:"enabled"`
	Stage   string `json:"stage"`
	Applied bool   `json:"applied"`
	Keys    []struct {
		Active bool   `json:"active"`
		Type   string `json:"type"`
		Name   string `json:"name"`
	} `json:"keys"`
	Secrets *struct {
		Total       int            `json:"total"`
		WithPrimary int            `json:"withPrimary"`
		ByKey       map[string]int `json:"byKey"`
	} `json:"secrets"`
	SecretsError   string `json:"secretsError"`
	ReencryptError string `json:"reencryptError"`
}

// A server with --secrets-encryption stores Secrets encrypted with aescbc;
// a classic rotation (prepare, rotate, reencrypt) and rotate-keys rewrite
// every Secret with the new key; disable and a reencrypt decrypt them;
// status says each step; rotate while a rotation is unfinished is refused
// with nothing changed.
func TestSecretsEncryption(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	s := newServer(t, "--secrets-encryption")
	s.Start()
	ctx := context.Background()
	c := s.Client()
	cred := filepath.Join(s.DataDir, "server", "cred")
	cfgFile := filepath.Join(cred, "encryption-config.json")
	if fi, err := os.Stat(cfgFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want mode 0600", cfgFile, fi, err)
	}

	db, err := sql.Open("sqlite3", filepath.Join(s.DataDir, "server", "db", "state.db")+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// raw is a Secret's latest stored bytes in kine's table.
	raw := func(ns, name string) []byte {
		t.Helper()
		var v []byte
		if err := db.QueryRow(`SELECT value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1`, "/registry/secrets/"+ns+"/"+name).Scan(&v); err != nil {
			t.Fatalf("reading secret %s/%s from the datastore: %v", ns, name, err)
		}
		return v
	}
	// keyOf is the key name in an encrypted value's prefix, "" for plain text.
	keyOf := func(ns, name string) string {
		v := raw(ns, name)
		const p = "k8s:enc:aescbc:v1:"
		if !bytes.HasPrefix(v, []byte(p)) {
			if !bytes.HasPrefix(v, []byte("k8s\x00")) {
				t.Fatalf("secret %s/%s stored as %q...", ns, name, v[:min(len(v), 30)])
			}
			return ""
		}
		return strings.SplitN(string(v[len(p):]), ":", 2)[0]
	}
	enc := func(args ...string) (string, error) {
		return runToExit(t, 3*time.Minute, append(append([]string{"secrets-encrypt"}, args...), "--kubeconfig", s.Kubeconfig)...)
	}
	status := func() encStatus {
		t.Helper()
		out, err := enc("status", "-o", "json")
		if err != nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		var st encStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		if st.Secrets == nil {
			t.Fatalf("status has no Secrets count: %s", st.SecretsError)
		}
		return st
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := enc(args...)
		if err != nil {
			t.Fatalf("secrets-encrypt %v: %v\n%s", args, err, out)
		}
		return out
	}
	waitFinished := func() encStatus {
		t.Helper()
		var st encStatus
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
			st = status()
			return st.Stage == "reencrypt_finished" || st.ReencryptError != "", nil
		})
		if err != nil || st.ReencryptError != "" {
			t.Fatalf("reencrypt did not finish: %v %+v", err, st)
		}
		return st
	}

	names := []struct{ ns, name string }{{"default", "one"}, {"default", "two"}, {"kube-system", "three"}}
	for _, n := range names {
		if _, err := c.CoreV1().Secrets(n.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: n.name}, StringData: map[string]string{"k": "v-" + n.name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		if v := raw(n.ns, n.name); !bytes.HasPrefix(v, []byte("k8s:enc:aescbc:v1:aescbckey:")) {
			t.Fatalf("secret %s/%s stored as %q, want k8s:enc:aescbc:v1:aescbckey:", n.ns, n.name, v[:min(len(v), 40)])
		}
	}
	st := status()
	if !st.Enabled || st.Stage != "start" || !st.Applied || len(st.Keys) != 2 || st.Keys[0].Name != "aescbckey" || !st.Keys[0].Active ||
		st.Secrets.Total < len(names) || st.Secrets.WithPrimary != st.Secrets.Total {
		t.Fatalf("status after start: %+v %+v", st, *st.Secrets)
	}
	if out, _ := enc("status"); !strings.Contains(out, "Encryption Status: Enabled") || !strings.Contains(out, "Current Rotation Stage: start") {
		t.Errorf("text status:\n%s", out)
	}

	// unchanged reads the key file and the state file: a refusal must
	// leave both as they are.
	files := func() string {
		a, _ := os.ReadFile(cfgFile)
		b, _ := os.ReadFile(filepath.Join(cred, "encryption-state.json"))
		return string(a) + "\x00" + string(b)
	}
	refused := func(want string, args ...string) {
		t.Helper()
		before := files()
		out, err := enc(args...)
		if err == nil || !strings.Contains(out, want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("secrets-encrypt %v: %v\n%s\nwant one line with %q", args, err, out, want)
		}
		if files() != before {
			t.Errorf("secrets-encrypt %v changed the keys or the stage", args)
		}
	}
	refused("no key is prepared (stage start)", "rotate")

	// The classic rotation.
	run("prepare")
	st = status()
	if st.Stage != "prepare" || len(st.Keys) != 3 || st.Keys[0].Name != "aescbckey" || !st.Applied {
		t.Fatalf("after prepare: %+v", st)
	}
	newKey := st.Keys[1].Name
	refused("a key is prepared already", "prepare")
	run("rotate")
	st = status()
	if st.Stage != "rotate" || st.Keys[0].Name != newKey || !st.Applied || st.Secrets.WithPrimary == st.Secrets.Total {
		t.Fatalf("after rotate: %+v %+v", st, *st.Secrets)
	}
	refused("the previous rotation is unfinished (stage rotate)", "rotate")
	refused("the previous rotation is unfinished", "rotate-keys")
	if _, err := c.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "four"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	names = append(names, struct{ ns, name string }{"default", "four"})
	if k := keyOf("default", "four"); k != newKey {
		t.Errorf("a Secret written after rotate has key %q, want %q", k, newKey)
	}
	run("reencrypt")
	st = waitFinished()
	if len(st.Keys) != 2 || st.Keys[0].Name != newKey || st.Secrets.WithPrimary != st.Secrets.Total {
		t.Fatalf("after reencrypt: %+v %+v", st, *st.Secrets)
	}
	for _, n := range names {
		if k := keyOf(n.ns, n.name); k != newKey {
			t.Errorf("after reencrypt, %s/%s has key %q, want %q", n.ns, n.name, k, newKey)
		}
	}

	// rotate-keys: all at once.
	run("rotate-keys")
	st = waitFinished()
	if len(st.Keys) != 2 || st.Keys[0].Name == newKey || st.Secrets.WithPrimary != st.Secrets.Total {
		t.Fatalf("after rotate-keys: %+v %+v", st, *st.Secrets)
	}
	rotated := st.Keys[0].Name
	for _, n := range names {
		if k := keyOf(n.ns, n.name); k != rotated {
			t.Errorf("after rotate-keys, %s/%s has key %q, want %q", n.ns, n.name, k, rotated)
		}
	}

	// disable, then reencrypt decrypts.
	run("disable")
	st = status()
	if st.Enabled || !st.Applied || st.Keys[0].Type != "identity" || st.Secrets.WithPrimary == st.Secrets.Total {
		t.Fatalf("after disable: %+v %+v", st, *st.Secrets)
	}
	run("reencrypt")
	st = waitFinished()
	if st.Enabled || st.Secrets.WithPrimary != st.Secrets.Total || len(st.Keys) != 2 {
		t.Fatalf("after disable and reencrypt: %+v %+v", st, *st.Secrets)
	}
	for _, n := range names {
		if k := keyOf(n.ns, n.name); k != "" {
			t.Errorf("after disable and reencrypt, %s/%s is still encrypted with %q", n.ns, n.name, k)
		}
	}
	sec, err := c.CoreV1().Secrets("default").Get(ctx, "one", metav1.GetOptions{})
	if err != nil || string(sec.Data["k"]) != "v-one" {
		t.Fatalf("reading a Secret after the round trip: %v %v", err, sec)
	}

	// enable: new writes are encrypted again, with the kept key.
	run("enable")
	if _, err := c.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "five"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if k := keyOf("default", "five"); k != rotated {
		t.Errorf("after enable, a new Secret has key %q, want %q", k, rotated)
	}
	if st := status(); !st.Enabled || st.Secrets.WithPrimary == st.Secrets.Total {
		t.Errorf("after enable: %+v %+v", st, *st.Secrets)
	}
	for _, line := range []string{"generated the secrets encryption key", "reencrypted every Secret"} {
		if !strings.Contains(s.Output(), line) {
			t.Errorf("the server did not log %q", line)
		}
	}

	// A restart without the flag keeps the keys: the stored Secrets stay
	// readable and new ones are encrypted.
	s.Stop()
	s.extra = nil
	s.Start()
	if !strings.Contains(s.Output(), "Secrets stay encrypted with the existing keys") {
		t.Errorf("no note that the keys stay in use:\n%s", s.Output())
	}
	if _, err := c.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "six"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if k := keyOf("default", "six"); k != rotated {
		t.Errorf("after a restart without the flag, a new Secret has key %q, want %q", k, rotated)
	}
	if sec, err := c.CoreV1().Secrets("default").Get(ctx, "five", metav1.GetOptions{}); err != nil || sec.Name != "five" {
		t.Errorf("reading an encrypted Secret after the restart: %v", err)
	}
}

// On embedded etcd, a cluster of one member changes keys (the servers are
// counted from etcd's member list), and status counts Secrets stored in
// etcd over more than one page of its read.
func TestSecretsEncryptionEmbeddedEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	s := newServer(t, "--cluster-init", "--secrets-encryption")
	s.Start()
	ctx := context.Background()
	c := s.Client()
	for i := range 60 {
		if _, err := c.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%02d", i)}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	enc := func(args ...string) encStatus {
		t.Helper()
		out, err := runToExit(t, 3*time.Minute, append(append([]string{"secrets-encrypt"}, args...), "--kubeconfig", s.Kubeconfig)...)
		if err != nil {
			t.Fatalf("secrets-encrypt %v: %v\n%s", args, err, out)
		}
		var st encStatus
		if args[0] == "status" {
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatalf("status: %v\n%s", err, out)
			}
		}
		return st
	}
	enc("rotate-keys")
	var st encStatus
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		st = enc("status", "-o", "json")
		return st.Stage == "reencrypt_finished" || st.ReencryptError != "", nil
	})
	if err != nil || st.ReencryptError != "" {
		t.Fatalf("reencrypt did not finish: %v %+v", err, st)
	}
	if st.Secrets == nil || st.Secrets.Total < 60 || st.Secrets.WithPrimary != st.Secrets.Total || len(st.Keys) != 2 {
		t.Errorf("after rotate-keys on one etcd member: %+v (secrets %+v)", st, st.Secrets)
	}
}
