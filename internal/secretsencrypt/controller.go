package secretsencrypt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	encryptioncontroller "k8s.io/apiserver/pkg/server/options/encryptionconfig/controller"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/skiffkube/skiff/internal/controlplane"
)

// PathPrefix is where the supervisor serves the secrets-encrypt API:
// GET PathPrefix+"status", POST PathPrefix+<operation>.
const PathPrefix = "/v1-skiff/encrypt/"

// ReloadInterval is how often the apiserver looks for a changed
// encryption config file (upstream's default is a minute): a few seconds
// of latency for a key change, for reading a small file.
const ReloadInterval = 3 * time.Second

// loadTimeout bounds the wait for the apiserver to take a new file.
const loadTimeout = time.Minute

// Config is what the server-side controller needs.
type Config struct {
	Layout controlplane.Layout
	// Provider is the type of new keys (--secrets-encryption-provider).
	Provider string
	// Configured is true when the apiserver was started with the
	// encryption config file (it reloads it; it cannot be given one later).
	Configured bool
	// Refuse, when set, is why this server must not change keys (its
	// bootstrap data is shared through an external datastore); status
	// still works.
	Refuse string
	// Kubeconfig is the admin kubeconfig the rewrite of Secrets uses.
	Kubeconfig string
	// Datastore opens a client of the apiserver's datastore, where status
	// reads the Secrets' stored bytes; the caller's client is closed here.
	Datastore func() (*clientv3.Client, error)
	// StoragePrefix is the apiserver's --etcd-prefix ("/registry").
	StoragePrefix string
	// Servers counts the servers of the cluster by durable membership
	// (embedded etcd: every member, learners and members down included),
	// not by which are up: a server down now still holds its copy of the
	// key file. Nil means one server (SQLite).
	Servers func(context.Context) (int, error)
}

// Controller serves `skiff secrets-encrypt` on the supervisor and runs
// reencrypts in the background. It is a component of the server's
// controllers phase: Start resumes a reencrypt a restart interrupted.
type Controller struct {
	cfg Config
	log *slog.Logger
	// loaded returns the hash of the config the apiserver runs with;
	// replaced in tests.
	loaded func() (string, error)
	// clientset is the admin's API client; replaced in tests.
	clientset func() (kubernetes.Interface, error)

	mu      sync.Mutex // serializes operations
	running bool       // a reencrypt goroutine is running
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New returns the controller. It shortens the apiserver's poll of the
// config file to ReloadInterval, so call it before the apiserver starts.
func New(cfg Config, log *slog.Logger) *Controller {
	encryptioncontroller.EncryptionConfigFileChangePollDuration = ReloadInterval
	if cfg.StoragePrefix == "" {
		cfg.StoragePrefix = "/registry"
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{cfg: cfg, log: log.With("component", "secrets-encrypt"), loaded: loadedHash, ctx: ctx, cancel: cancel}
	c.clientset = c.kubeconfigClient
	return c
}

func (c *Controller) Name() string               { return "secrets-encrypt" }
func (c *Controller) Init(context.Context) error { return nil }
func (c *Controller) Ready() error               { return nil }

// Start resumes a reencrypt that a stop interrupted.
func (c *Controller) Start(context.Context) error {
	if !c.cfg.Configured || c.cfg.Refuse != "" {
		return nil
	}
	s, err := ReadState(c.cfg.Layout)
	if err != nil {
		return err
	}
	if s.Stage.reencrypting() && s.Error == "" {
		c.mu.Lock()
		c.startReencrypt(s.Keep)
		c.mu.Unlock()
		c.log.Info("resuming the interrupted reencrypt of Secrets")
	}
	return nil
}

// Stop cancels a running reencrypt (a restart resumes it) and waits for it.
func (c *Controller) Stop() error {
	c.cancel()
	c.wg.Wait()
	return nil
}

// ServeHTTP serves the secrets-encrypt API to the admin: a client
// certificate of the cluster's client CA in group system:masters.
func (c *Controller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := c.authorize(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	op := strings.TrimPrefix(r.URL.Path, PathPrefix)
	if r.Method == http.MethodGet && op == "status" {
		st, err := c.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
		return
	}
	if r.Method != http.MethodPost || !slices.Contains(Ops, op) {
		http.Error(w, fmt.Sprintf("unknown secrets-encrypt request %s %s", r.Method, r.URL.Path), http.StatusNotFound)
		return
	}
	var req Request
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
			http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	msg, err := c.Change(r.Context(), op, req)
	if err != nil {
		http.Error(w, "secrets-encrypt "+op+": "+err.Error(), http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintln(w, msg)
}

// Request is the body of a change request.
type Request struct {
	// Keep (reencrypt --skip) keeps the old keys after a reencrypt.
	Keep bool `json:"keep,omitempty"`
}

// authorize accepts a client certificate that chains to the client CA and
// names group system:masters, as the apiserver would for the admin.
func (c *Controller) authorize(r *http.Request) error {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return errors.New("secrets-encrypt needs the admin's client certificate (the admin kubeconfig)")
	}
	pem, err := os.ReadFile(c.cfg.Layout.ClientCA().Cert)
	if err != nil {
		return fmt.Errorf("reading the client CA: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	inter := x509.NewCertPool()
	for _, ic := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	leaf := r.TLS.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return errors.New("secrets-encrypt: the client certificate is not one of this cluster's")
	}
	if !slices.Contains(leaf.Subject.Organization, "system:masters") {
		return errors.New("secrets-encrypt: only the admin (group system:masters) may use it")
	}
	return nil
}

// Change runs op (one of Ops) and returns what it did, one line. A refusal
// changes nothing. enable, disable, prepare and rotate return once the
// apiserver runs with the new keys; reencrypt and rotate-keys start the
// rewrite of every Secret in the background (status follows it).
func (c *Controller) Change(ctx context.Context, op string, req Request) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.cfg.Layout
	if c.cfg.Refuse != "" {
		return "", errors.New(c.cfg.Refuse)
	}
	if !c.cfg.Configured || !Exists(l) {
		return "", errors.New("this server runs without an encryption config: start it with --secrets-encryption")
	}
	if c.cfg.Servers != nil {
		n, err := c.cfg.Servers(ctx)
		if err != nil {
			return "", fmt.Errorf("counting the cluster's servers (etcd members): %w", err)
		}
		if n > 1 {
			return "", fmt.Errorf("the cluster has %d servers (etcd members, counted up or down): changing encryption keys on several servers is not supported yet (each holds its own copy of %s)", n, l.EncryptionConfig())
		}
	}
	s, err := ReadState(l)
	if err != nil {
		return "", err
	}
	k, err := Read(l)
	if err != nil {
		return "", err
	}
	if op == OpReencrypt && s.Stage.reencrypting() && !c.running {
		// A reencrypt that failed: run it again.
		s.Stage = StageRotate
	}
	ns, nk, err := Apply(op, s, k, c.cfg.Provider, time.Now())
	if err != nil {
		return "", err
	}
	ns.Keep = req.Keep
	before, _ := k.Marshal()
	after, err := nk.Marshal()
	if err != nil {
		return "", err
	}
	if !bytes.Equal(before, after) {
		if err := Write(l, nk); err != nil {
			return "", err
		}
	}
	if err := WriteState(l, ns); err != nil {
		return "", err
	}
	c.log.Info("secrets encryption changed", "operation", op, "stage", ns.Stage, "primary", describe(nk.Primary()))
	if ns.Stage == StageReencryptRequest {
		c.startReencrypt(req.Keep)
		return fmt.Sprintf("reencrypting every Secret with %s in the background; skiff secrets-encrypt status shows when it is done", describe(nk.Primary())), nil
	}
	if err := c.waitLoaded(ctx); err != nil {
		return "", err
	}
	switch op {
	case OpPrepare:
		return fmt.Sprintf("prepared key %s (not primary yet); next: skiff secrets-encrypt rotate", ns.Prepared), nil
	case OpRotate:
		return fmt.Sprintf("key %s is primary; next: skiff secrets-encrypt reencrypt", nk.Primary().Name), nil
	case OpDisable:
		return "secrets encryption disabled: new writes are plain text; skiff secrets-encrypt reencrypt decrypts the stored Secrets", nil
	default:
		return fmt.Sprintf("secrets encryption enabled with %s; skiff secrets-encrypt reencrypt encrypts Secrets stored before", describe(nk.Primary())), nil
	}
}

func describe(k Key) string {
	if k.Type == Identity {
		return "identity (no encryption)"
	}
	return k.Type + " key " + k.Name
}

// startReencrypt runs the reencrypt in the background; c.mu is held.
func (c *Controller) startReencrypt(keep bool) {
	c.running = true
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := c.reencrypt(c.ctx, keep)
		// The final state is written before running is cleared, under mu:
		// a reencrypt requested once running is false starts from it, and
		// nothing of this run writes after that.
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil && c.ctx.Err() == nil {
			c.log.Error("reencrypting Secrets failed; run skiff secrets-encrypt reencrypt again", "error", err.Error())
			if werr := WriteState(c.cfg.Layout, State{Stage: StageReencryptActive, Keep: keep, Error: err.Error()}); werr != nil {
				c.log.Error("recording the failed reencrypt", "error", werr.Error())
			}
		}
		c.running = false
	}()
}

// reencrypt rewrites every Secret with the primary key once the apiserver
// runs with it, then drops the old keys (unless keep).
func (c *Controller) reencrypt(ctx context.Context, keep bool) error {
	l := c.cfg.Layout
	if err := c.waitLoaded(ctx); err != nil {
		return err
	}
	if err := WriteState(l, State{Stage: StageReencryptActive, Keep: keep}); err != nil {
		return err
	}
	begin := time.Now()
	n, err := c.rewriteSecrets(ctx)
	if err != nil {
		return err
	}
	k, err := Read(l)
	if err != nil {
		return err
	}
	if f := Finish(k, keep); len(f) != len(k) {
		if err := Write(l, f); err != nil {
			return err
		}
		if err := c.waitLoaded(ctx); err != nil {
			return err
		}
	}
	if err := WriteState(l, State{Stage: StageReencryptFinished}); err != nil {
		return err
	}
	c.log.Info("reencrypted every Secret", "secrets", n, "primary", describe(k.Primary()), "took", time.Since(begin).Round(time.Millisecond).String())
	return nil
}

// rewriteSecrets updates every Secret unchanged: the apiserver writes one
// that it read with a key other than the primary (and only such a one)
// with the primary.
func (c *Controller) rewriteSecrets(ctx context.Context) (int, error) {
	cs, err := c.client()
	if err != nil {
		return 0, err
	}
	n := 0
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := cs.CoreV1().Secrets(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return n, fmt.Errorf("listing Secrets: %w", err)
		}
		for i := range list.Items {
			if err := rewrite(ctx, cs, &list.Items[i]); err != nil {
				return n, err
			}
			n++
		}
		if list.Continue == "" {
			return n, nil
		}
		opts.Continue = list.Continue
	}
}

func rewrite(ctx context.Context, cs kubernetes.Interface, s *corev1.Secret) error {
	first := true
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			latest, err := cs.CoreV1().Secrets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			s = latest
		}
		first = false
		_, err := cs.CoreV1().Secrets(s.Namespace).Update(ctx, s, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rewriting Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

func (c *Controller) client() (kubernetes.Interface, error) { return c.clientset() }

func (c *Controller) kubeconfigClient() (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("admin kubeconfig %s: %w", c.cfg.Kubeconfig, err)
	}
	return kubernetes.NewForConfig(rc)
}

// waitLoaded waits until the apiserver runs with the file's content.
func (c *Controller) waitLoaded(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	for {
		ok, err := c.applied()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the apiserver has not loaded %s within %s (see the server's log)", c.cfg.Layout.EncryptionConfig(), loadTimeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// applied reports whether the apiserver runs with the file's content.
func (c *Controller) applied() (bool, error) {
	b, err := os.ReadFile(c.cfg.Layout.EncryptionConfig())
	if err != nil {
		return false, fmt.Errorf("secrets encryption: %w", err)
	}
	got, err := c.loaded()
	if err != nil {
		return false, err
	}
	return got == fmt.Sprintf("sha256:%x", sha256.Sum256(b)), nil
}

// loadedHash is the content hash of the encryption config the in-process
// apiserver last loaded, from its own metric ("" before it loaded one).
func loadedHash() (string, error) {
	mfs, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return "", fmt.Errorf("reading the apiserver's metrics: %w", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "apiserver_encryption_config_controller_last_config_info" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "hash" {
					return lp.GetValue(), nil
				}
			}
		}
	}
	return "", nil
}
