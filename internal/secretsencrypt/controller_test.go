package secretsencrypt

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/pki"
)

// The secrets-encrypt API is the admin's: a client certificate of the
// cluster's client CA in group system:masters. Anything else is refused
// before any file is read or written.
func TestControllerServesOnlyTheAdmin(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	ca, _, err := pki.LoadOrCreateCA(l.ClientCA().Cert, l.ClientCA().Key, "client-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := pki.LoadOrCreateCA(t.TempDir()+"/ca.crt", t.TempDir()+"/ca.key", "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(l, AESCBC, now); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(l.EncryptionConfig())
	c := New(Config{Layout: l, Provider: AESCBC, Configured: true}, slog.New(slog.DiscardHandler))
	c.loaded = func() (string, error) { return "", nil }

	issue := func(ca *pki.CA, org string) []*x509.Certificate {
		certPEM, _, err := ca.IssueLeaf(pki.LeafSpec{CommonName: "someone", Organizations: []string{org}, Usage: pki.ClientAuth}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return []*x509.Certificate{cert}
	}
	for _, tc := range []struct {
		name  string
		certs []*x509.Certificate
		want  string
	}{
		{"no certificate", nil, "needs the admin's client certificate"},
		{"another CA", issue(other, "system:masters"), "not one of this cluster's"},
		{"not an admin", issue(ca, "system:nodes"), "only the admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []*http.Request{
				httptest.NewRequest(http.MethodGet, PathPrefix+"status", nil),
				httptest.NewRequest(http.MethodPost, PathPrefix+OpRotateKeys, nil),
			} {
				r.TLS = &tls.ConnectionState{PeerCertificates: tc.certs}
				w := httptest.NewRecorder()
				c.ServeHTTP(w, r)
				if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), tc.want) {
					t.Errorf("%s %s: %d %q, want 403 with %q", r.Method, r.URL.Path, w.Code, w.Body.String(), tc.want)
				}
			}
		})
	}
	after, _ := os.ReadFile(l.EncryptionConfig())
	if string(before) != string(after) {
		t.Error("a refused request changed the keys")
	}
	if _, err := os.Stat(StatePath(l)); !os.IsNotExist(err) {
		t.Errorf("a refused request wrote the state: %v", err)
	}

	// The admin gets the status (the datastore is not reachable here: the
	// Secrets are unknown, the rest is there).
	r := httptest.NewRequest(http.MethodGet, PathPrefix+"status", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: issue(ca, "system:masters")}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"enabled":true`) || !strings.Contains(w.Body.String(), `"stage":"start"`) {
		t.Errorf("admin status: %d %s", w.Code, w.Body.String())
	}
}

// An external datastore's server refuses key changes, naming why.
func TestControllerRefusesOnASharedBootstrap(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	c := New(Config{Layout: l, Configured: true, Refuse: "changing keys on an external datastore is not supported yet"}, slog.New(slog.DiscardHandler))
	if _, err := c.Change(t.Context(), OpRotateKeys, Request{}); err == nil || !strings.Contains(err.Error(), "external datastore") {
		t.Errorf("Change: %v", err)
	}
	c = New(Config{Layout: l, Configured: false}, slog.New(slog.DiscardHandler))
	if _, err := c.Change(t.Context(), OpPrepare, Request{}); err == nil || !strings.Contains(err.Error(), "start it with --secrets-encryption") {
		t.Errorf("Change without a config: %v", err)
	}
}

func kubernetesSlices(addrs map[discoveryv1.AddressType][]string) *fake.Clientset {
	var objs []runtime.Object
	for family, list := range addrs {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "kubernetes-" + strings.ToLower(string(family)), Namespace: "default", Labels: map[string]string{"kubernetes.io/service-name": "kubernetes"}},
			AddressType: family,
		}
		for _, a := range list {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
		}
		objs = append(objs, s)
	}
	return fake.NewClientset(objs...)
}

// loadsWhatTheFileHolds makes c's apiserver "load" whatever the file holds.
func loadsWhatTheFileHolds(c *Controller, l controlplane.Layout) {
	c.loaded = func() (string, error) {
		b, err := os.ReadFile(l.EncryptionConfig())
		return fmt.Sprintf("sha256:%x", sha256.Sum256(b)), err
	}
}

// Change applies an operation once the apiserver runs with the new file
// on a single server. Several servers are counted by membership, not by
// which are up: with two etcd members, one of them down (the kubernetes
// Service lists only the live one), a key change is refused with nothing
// changed, as is one when the members cannot be counted.
func TestChangeOnOneServerAndRefusalOnSeveral(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	if _, err := Ensure(l, AESCBC, now); err != nil {
		t.Fatal(err)
	}
	members := 1
	c := New(Config{Layout: l, Provider: AESCBC, Configured: true,
		Servers: func(context.Context) (int, error) { return members, nil }}, slog.New(slog.DiscardHandler))
	loadsWhatTheFileHolds(c, l)
	// Only the live server is in the kubernetes Service.
	c.clientset = func() (kubernetes.Interface, error) {
		return kubernetesSlices(map[discoveryv1.AddressType][]string{discoveryv1.AddressTypeIPv4: {"192.0.2.1"}}), nil
	}
	msg, err := c.Change(t.Context(), OpPrepare, Request{})
	if err != nil || !strings.Contains(msg, "next: skiff secrets-encrypt rotate") {
		t.Fatalf("prepare on one server: %q %v", msg, err)
	}
	if s, _ := ReadState(l); s.Stage != StagePrepare {
		t.Errorf("stage %s after prepare", s.Stage)
	}

	before, _ := os.ReadFile(l.EncryptionConfig())
	members = 2
	for _, op := range []string{OpRotate, OpRotateKeys, OpReencrypt, OpDisable} {
		if _, err := c.Change(t.Context(), op, Request{}); err == nil || !strings.Contains(err.Error(), "the cluster has 2 servers") {
			t.Errorf("%s with two members, one down: %v", op, err)
		}
	}
	c.cfg.Servers = func(context.Context) (int, error) {
		return 0, errors.New("etcd member list: context deadline exceeded")
	}
	if _, err := c.Change(t.Context(), OpRotateKeys, Request{}); err == nil || !strings.Contains(err.Error(), "etcd member list") {
		t.Errorf("rotate-keys when the members cannot be counted: %v", err)
	}
	c.wg.Wait()
	after, _ := os.ReadFile(l.EncryptionConfig())
	if s, _ := ReadState(l); s.Stage != StagePrepare || string(before) != string(after) {
		t.Errorf("a refused change changed something: stage %s", s.Stage)
	}
}

// A failed reencrypt records its error before a new one may start, and
// writes nothing after: the next reencrypt's state is its own.
func TestFailedReencryptThenAnotherOne(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	if _, err := Ensure(l, AESCBC, now); err != nil {
		t.Fatal(err)
	}
	c := New(Config{Layout: l, Provider: AESCBC, Configured: true}, slog.New(slog.DiscardHandler))
	loadsWhatTheFileHolds(c, l)
	c.clientset = func() (kubernetes.Interface, error) { return nil, errors.New("no apiserver") }
	if _, err := c.Change(t.Context(), OpRotateKeys, Request{}); err != nil {
		t.Fatal(err)
	}
	c.wg.Wait()
	s, _ := ReadState(l)
	if s.Stage != StageReencryptActive || !strings.Contains(s.Error, "no apiserver") {
		t.Fatalf("after a failed reencrypt: %+v", s)
	}
	k, _ := Read(l)
	if len(k) < 3 {
		t.Fatalf("a failed reencrypt dropped keys: %d left", len(k))
	}

	c.mu.Lock()
	c.clientset = func() (kubernetes.Interface, error) { return fake.NewClientset(), nil }
	c.mu.Unlock()
	if _, err := c.Change(t.Context(), OpReencrypt, Request{}); err != nil {
		t.Fatal(err)
	}
	c.wg.Wait()
	if s, _ := ReadState(l); s.Stage != StageReencryptFinished || s.Error != "" {
		t.Errorf("after the second reencrypt: %+v", s)
	}
	if k, _ := Read(l); len(k) != 2 {
		t.Errorf("after the second reencrypt: %d keys, want the primary and identity", len(k))
	}
}
