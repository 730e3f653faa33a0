// Package serverjoin is a server joining a cluster on embedded etcd: the
// join API route that hands a joining server the cluster's bootstrap data
// and its etcd members (the server token only), and the joining side that
// fetches it, verifying the server CA against the token's pin.
package serverjoin

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/agent/joinclient"
	"github.com/skiffkube/skiff/internal/bootstrap"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/token"
)

// Path is where the supervisor serves the server bootstrap (GET).
const Path = "/v1-skiff/server-bootstrap"

// Response is what a joining server gets.
type Response struct {
	// Bootstrap holds the shared files (CAs and keys, etcd CAs,
	// service-account key, token, encryption config) and the cluster's
	// settings.
	Bootstrap *bootstrap.Data `json:"bootstrap"`
	// EtcdMembers are the client URLs of the cluster's voting etcd members.
	EtcdMembers []string `json:"etcdMembers"`
}

// ErrNoEmbeddedEtcd is Members' error on a server that runs no embedded etcd.
var ErrNoEmbeddedEtcd = errors.New("this server runs no embedded etcd (it was started without --cluster-init): servers join it only through an external datastore")

// Handler serves Path.
type Handler struct {
	Layout   controlplane.Layout
	Settings bootstrap.Settings
	// Members returns the client URLs of the voting etcd members, or
	// ErrNoEmbeddedEtcd.
	Members func(ctx context.Context) ([]string, error)
	// JoinSecrets are the secrets agents join with (the agent token's
	// among them), read per request: a match that is not the server
	// token's is an agent token.
	JoinSecrets func() []string
	// IsBootstrapToken reports a valid `skiff token create` token.
	IsBootstrapToken func(ctx context.Context, given string) bool
	// Replaced, when set, reports a server token secret the cluster
	// rotated away from while this server could not follow: it is refused.
	Replaced func(secret string) bool
	Log      *slog.Logger
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp, status, err := h.serve(r)
	if err != nil {
		if h.Log != nil {
			h.Log.Warn("server join refused", "component", "join", "remote", r.RemoteAddr, "status", status, "err", err)
		}
		http.Error(w, err.Error(), status)
		return
	}
	if h.Log != nil {
		h.Log.Info("handed the bootstrap data to a joining server", "component", "join", "remote", r.RemoteAddr)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (h *Handler) serve(r *http.Request) (*Response, int, error) {
	given, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if given == "" {
		return nil, http.StatusUnauthorized, errors.New("no token: a server joins with --token, the server token from <data-dir>/server/token of a server of the cluster")
	}
	server, err := os.ReadFile(h.Layout.TokenFile())
	if err != nil {
		return nil, http.StatusServiceUnavailable, errors.New("this server has no token yet: retry once it has started")
	}
	st, err := token.Parse(string(server))
	if err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("this server's token file: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(given), []byte(st.Secret)) != 1 {
		agent := false
		if h.JoinSecrets != nil {
			for _, s := range h.JoinSecrets() {
				agent = agent || (s != "" && subtle.ConstantTimeCompare([]byte(given), []byte(s)) == 1)
			}
		}
		if agent || (h.IsBootstrapToken != nil && h.IsBootstrapToken(r.Context(), given)) {
			return nil, http.StatusForbidden, fmt.Errorf("agent tokens cannot join servers; use the server token from <data-dir>/server/token")
		}
		return nil, http.StatusUnauthorized, errors.New("token not accepted: a server joins with the server token from <data-dir>/server/token of a server of this cluster")
	}
	if h.Replaced != nil && h.Replaced(st.Secret) {
		return nil, http.StatusUnauthorized, errors.New("token not accepted: the cluster's server token was rotated and this server has not taken the new one yet; join through another server with the new token")
	}
	members, err := h.Members(r.Context())
	if errors.Is(err, ErrNoEmbeddedEtcd) {
		return nil, http.StatusConflict, err
	}
	if err != nil {
		return nil, http.StatusServiceUnavailable, fmt.Errorf("listing the etcd members: %w", err)
	}
	data, err := bootstrap.Collect(h.Layout, h.Settings)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	return &Response{Bootstrap: data, EtcdMembers: members}, http.StatusOK, nil
}

// RefusedError is a join the server answered with an error status.
type RefusedError struct {
	Server  string
	Status  int
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("server %s refused to let this server join (%d): %s", e.Server, e.Status, e.Message)
}

// Fetch gets the bootstrap data from serverURL: the server CA from /cacerts
// checked against t's pin (a token without one is trusted on first use,
// and pinned reports false), then Path over TLS verified with that CA, with
// t's secret. The answer is checked as a whole (Data.Check) before it is
// returned; nothing is written.
func Fetch(ctx context.Context, serverURL string, t token.Token, l controlplane.Layout) (resp *Response, pinned bool, err error) {
	caPEM, pinned, err := joinclient.FetchCA(ctx, serverURL, t)
	if err != nil {
		return nil, false, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, false, fmt.Errorf("the server CA from %s/cacerts holds no certificate", serverURL)
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(serverURL, "/")+Path, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Authorization", "Bearer "+t.Secret)
	r, err := c.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("joining %s: %w", serverURL, err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if r.StatusCode != http.StatusOK {
		return nil, false, &RefusedError{Server: serverURL, Status: r.StatusCode, Message: strings.TrimSpace(string(body))}
	}
	var out Response
	if err := json.Unmarshal(body, &out); err != nil || out.Bootstrap == nil {
		return nil, false, fmt.Errorf("joining %s: malformed answer: %v", serverURL, err)
	}
	if err := out.Bootstrap.Check(l); err != nil {
		return nil, false, fmt.Errorf("joining %s: %w", serverURL, err)
	}
	if got := out.Bootstrap.Files[relServerCA(l)]; strings.TrimSpace(string(got)) != strings.TrimSpace(string(caPEM)) {
		return nil, false, fmt.Errorf("joining %s: the bootstrap data's server CA is not the one the server presents", serverURL)
	}
	if len(out.EtcdMembers) == 0 {
		return nil, false, fmt.Errorf("joining %s: the cluster lists no etcd member", serverURL)
	}
	return &out, pinned, nil
}

func relServerCA(l controlplane.Layout) string {
	r, _ := filepath.Rel(l.DataDir, l.ServerCA().Cert)
	return filepath.ToSlash(r)
}

// Check refuses, before anything is written, a bootstrap this server must
// not take: cluster-wide settings that differ from mine (naming each flag
// and both values), or files in l's data dir that the bootstrap would
// replace (another cluster's CAs).
func (r *Response) Check(mine bootstrap.Settings, l controlplane.Layout, serverURL string) error {
	if err := mine.Mismatch(r.Bootstrap.Settings); err != nil {
		return fmt.Errorf("this server's settings differ from the cluster's at %s: %w", serverURL, err)
	}
	conflicts, err := r.Bootstrap.Conflicts(l)
	if err != nil {
		return err
	}
	if len(conflicts) > 0 {
		return fmt.Errorf("data-dir %s holds files of another cluster (%s): joining %s would replace them; use a new data-dir", l.DataDir, strings.Join(conflicts, ", "), serverURL)
	}
	return nil
}
