package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffkube/skiff/internal/imagearchive"
)

// loopbackRegistry is Debian's docker-registry (the CNCF distribution
// registry) serving TLS on 127.0.0.1 with a private CA and htpasswd basic
// auth, its storage and log in a test directory.
type loopbackRegistry struct {
	Addr, CAFile, User, Password string
	log                          *syncBuffer
}

func startLoopbackRegistry(t *testing.T) *loopbackRegistry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("docker-registry not installed (apt-get install docker-registry)")
		}
		t.Skip("needs Debian's docker-registry package")
	}
	dir := t.TempDir()
	r := &loopbackRegistry{
		Addr:     "127.0.0.1:" + strconv.Itoa(freePort(t)),
		CAFile:   filepath.Join(dir, "ca.crt"),
		User:     "puller",
		Password: "s3cret-pull",
		log:      &syncBuffer{},
	}
	certFile, keyFile := filepath.Join(dir, "registry.crt"), filepath.Join(dir, "registry.key")
	writeTestCA(t, r.CAFile, certFile, keyFile, net.IPv4(127, 0, 0, 1))
	hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(r.User+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: e2e-not-secret
  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: skiff-e2e
    path: %s
`, filepath.Join(dir, "storage"), r.Addr, certFile, keyFile, htpasswd)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", config)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// Ready once /v2/ asks for credentials over TLS with the private CA.
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(r.CAFile)
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-exited:
			t.Fatalf("docker-registry exited:\n%s", r.log.String())
		default:
		}
		resp, err := client.Get("https://" + r.Addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry not answering on %s: %v\n%s", r.Addr, err, r.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeTestCA writes a CA and a serving certificate it signed for ip.
func writeTestCA(t *testing.T, caFile, certFile, keyFile string, ip net.IP) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "skiff-e2e-registry-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "registry"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{ip}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	for path, block := range map[string]*pem.Block{
		caFile:   {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPrivateRegistryMirror pulls a pod's image through a registries.yaml
// mirror: a made-up registry host mirrored to a real registry on loopback
// that needs basic auth and trusts a private CA, with a rewrite rule that
// maps the repository name. The registry is filled with `skiff ctr push` of
// an image of its own (see buildUniqueWebImage). The node is an agent; the server runs with
// --system-default-registry, which the agent gets at join: its pods'
// sandboxes use the built-in pause image under that registry's name,
// imported from the binary, not pulled.
// registrySrcImage is the name the mirrored image is imported under on the
// node before it is pushed to the registry.
const registrySrcImage = "skiff.test/registry-src:1.0"

// buildUniqueWebImage packs the web program with a random file, so that the
// image's digest is this run's alone.
func buildUniqueWebImage(t *testing.T, dest, ref string) {
	t.Helper()
	marker := make([]byte, 16)
	if _, err := rand.Read(marker); err != nil {
		t.Fatal(err)
	}
	buildWebImageAs(t, dest, ref, imagearchive.File{Path: "/run-id", Mode: 0o644, Data: []byte(hex.EncodeToString(marker))})
}

func TestPrivateRegistryMirror(t *testing.T) {
	bin := skiffBin(t)
	requireRoot(t)
	reg := startLoopbackRegistry(t)

	const mirrored = "registry.example.test"
	regFile := filepath.Join(t.TempDir(), "registries.yaml")
	if err := os.WriteFile(regFile, []byte(fmt.Sprintf(`mirrors:
  %s:
    endpoint:
      - https://%s
    rewrite:
      "^library/(.*)": "mirror/library/$1"
configs:
  "%s":
    auth:
      username: %s
      password: %s
    tls:
      ca_file: %s
`, mirrored, reg.Addr, reg.Addr, reg.User, reg.Password, reg.CAFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	// The server has no node; the agent gets --system-default-registry when
	// it joins, and uses its own registries.yaml.
	s := newServer(t, "--system-default-registry", mirrored)
	s.Start()
	raw, err := os.ReadFile(filepath.Join(s.DataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	agentDir := filepath.Join(t.TempDir(), "agent")
	// The image pulled through the mirror has a digest of its own. The
	// kubelet records that it pulled an image with credentials (in
	// /var/lib/kubelet/image_manager, which outlives this test) and from then
	// on refuses that image to pods without them: pulling the built-in
	// pause image here would lock every later pod that runs it with
	// imagePullPolicy Never out of it.
	buildUniqueWebImage(t, filepath.Join(agentDir, "agent", "images", "mirror-src.tar"), registrySrcImage)
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "killall", "--data-dir", agentDir).CombinedOutput(); err != nil {
			t.Logf("killall: %v\n%s", err, out)
		}
	})
	a := startAgent(t, "--server", s.URL(), "--token", strings.TrimSpace(string(raw)), "--data-dir", agentDir,
		"--lb-server-port", strconv.Itoa(freePort(t)), "--private-registry", regFile)
	a.waitFor(t, "skiff agent ready in", 2*time.Minute)

	// The built-in pause image, also named under the system default registry.
	out, err := runToExitEnv(t, nil, bin, "ctr", "images", "ls", "-q")
	if err != nil || !strings.Contains(out, "skiff.local/skiff/pause:1.0") || !strings.Contains(out, mirrored+"/skiff/pause:1.0") {
		t.Fatalf("images after start: %v\n%s", err, out)
	}
	// Fill the registry, where the rewrite rule will look.
	pushed := reg.Addr + "/mirror/library/web:1.0"
	out, err = runToExitEnv(t, nil, bin, "ctr", "images", "push", "--local", "--user", reg.User+":"+reg.Password,
		"--tlscacert", reg.CAFile, pushed, registrySrcImage)
	if err != nil {
		t.Fatalf("skiff ctr images push: %v\n%s", err, out)
	}
	if !strings.Contains(reg.log.String(), "PUT /v2/mirror/library/web/manifests/1.0") {
		t.Fatalf("the registry saw no manifest push:\n%s", reg.log.String())
	}

	c := s.Client()
	ctx := context.Background()
	image := mirrored + "/library/web:1.0"
	_, err = c.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "mirrored"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "web", Image: image, ImagePullPolicy: corev1.PullAlways,
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p, err := c.CoreV1().Pods("default").Get(ctx, "mirrored", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase == corev1.PodRunning {
			break
		}
		if time.Now().After(deadline) {
			ev, _ := s.kubectl("get", "events", "-n", "default")
			t.Fatalf("pod %s is %s: %+v\nevents:\n%s\nregistry log:\n%s", image, p.Status.Phase, p.Status.ContainerStatuses, ev, reg.log.String())
		}
		time.Sleep(time.Second)
	}
	// The pull went to the registry for the mirrored host (containerd says
	// which in ?ns=), under the rewritten name, authenticated.
	pulled, authorized := false, false
	for _, line := range strings.Split(reg.log.String(), "\n") {
		if !strings.Contains(line, "/v2/mirror/library/web/manifests/1.0?ns="+mirrored) {
			continue
		}
		pulled = pulled || strings.Contains(line, "\" 200 ")
		authorized = authorized || strings.Contains(line, `msg="authorized request"`)
	}
	if !pulled || !authorized || strings.Contains(reg.log.String(), "/v2/library/web/") {
		t.Errorf("registry log lacks an authorized pull of the rewritten name (pulled %t, authorized %t):\n%s", pulled, authorized, reg.log.String())
	}
	// The sandbox image is the built-in one under its prefixed name.
	data, err := os.ReadFile(filepath.Join(agentDir, "agent", "etc", "containerd", "config.toml"))
	if err != nil || !strings.Contains(string(data), `sandbox = "`+mirrored+`/skiff/pause:1.0"`) {
		t.Errorf("containerd's sandbox image is not the prefixed built-in one: %v", err)
	}
	if strings.Contains(string(data), reg.Password) {
		// The CRI plugin's credentials are there by design; the file is 0600.
		if st, err := os.Stat(filepath.Join(agentDir, "agent", "etc", "containerd", "config.toml")); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("containerd config with credentials is not 0600: %v %v", st.Mode(), err)
		}
	}
}

// TestPrivateRegistryBadFile: a registries.yaml with an unknown key is
// refused at start with one line naming the file and the key, before the
// data dir is created.
func TestPrivateRegistryBadFile(t *testing.T) {
	skiffBin(t)
	requireRoot(t)
	regFile := filepath.Join(t.TempDir(), "registries.yaml")
	if err := os.WriteFile(regFile, []byte("mirrors:\n  docker.io:\n    endpoints: [\"https://mirror.example.test\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newServerWith(t, "--private-registry", regFile)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		t.Fatalf("server did not refuse the file:\n%s", s.Output())
	}
	want := regFile + `: mirrors."docker.io".endpoints: unknown key`
	if s.exitErr == nil || !strings.Contains(s.Output(), want) {
		t.Fatalf("exit %v, want a line %q; output:\n%s", s.exitErr, want, s.Output())
	}
	if _, err := os.Stat(s.DataDir); !os.IsNotExist(err) {
		t.Errorf("the data dir was written before the refusal: %v", err)
	}
	// An agent refuses it before it even asks the server.
	agentDir := filepath.Join(t.TempDir(), "agent")
	out, err := runToExit(t, time.Minute, "agent", "--server", "https://127.0.0.1:1", "--token", "SK10"+strings.Repeat("ab", 32)+"::node:secret",
		"--data-dir", agentDir, "--private-registry", regFile)
	if err == nil || !strings.Contains(out, want) {
		t.Errorf("agent: %v, want a line %q; output:\n%s", err, want, out)
	}
	if _, err := os.Stat(agentDir); !os.IsNotExist(err) {
		t.Errorf("the agent's data dir was written before the refusal: %v", err)
	}
}
