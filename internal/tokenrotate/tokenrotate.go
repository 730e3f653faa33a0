// Package tokenrotate is `skiff token rotate`: the supervisor route that
// replaces a server's token, and the client the command uses.
//
// The server checks the current token (as bearer), re-seals the cluster's
// bootstrap data under the new token when it lives in an external
// datastore (one transaction), records a hash of the old token (so a
// --token that still says it does not stop the server from starting), and
// writes the new token into <data-dir>/server/token. Joins read that file
// per request, so from then on the old token is refused and the new one
// accepted. Nodes that joined keep working: they come back with the
// certificates they hold, not with the token.
package tokenrotate

import (
	"bytes"
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/token"
)

// Path is where the supervisor serves the rotation (PUT).
const Path = "/v1-skiff/token"

// Request is the body of a rotation.
type Request struct {
	// NewToken is the token to rotate to, full or short form.
	NewToken string `json:"newToken"`
}

// Response is the answer to a rotation.
type Response struct {
	// Token is the server token now, in full form.
	Token string `json:"token"`
	// Changed is false when the token was the new one already.
	Changed bool `json:"changed"`
}

// Handler serves Path.
type Handler struct {
	Layout controlplane.Layout
	// Datastore, when set, connects to the datastore the cluster's
	// servers share (embedded etcd, or an external one); nil for SQLite.
	// The caller closes the client.
	Datastore func() (*clientv3.Client, error)
	// Sealed is true when the datastore holds the cluster's bootstrap data
	// sealed with the token (an external datastore).
	Sealed bool
	Log    *slog.Logger

	mu sync.Mutex
	// replaced is the stored token's secret once Follow failed to take
	// the token the cluster replaced it with (nil otherwise); atomic, not
	// under mu: joins read it, and a rotation holds mu for seconds.
	replaced atomic.Pointer[string]
}

// Replaced reports whether secret is this server's stored token and the
// cluster's servers replaced it in a rotation this server could not follow
// (Follow failed: ErrBehind, say). Joins authenticated with it are to be
// refused until this server has the new token (`skiff token rotate` on it,
// or a rotation record it can follow): the token may have been rotated
// because it leaked.
func (h *Handler) Replaced(secret string) bool {
	p := h.replaced.Load()
	return p != nil && secret != "" && subtle.ConstantTimeCompare([]byte(*p), []byte(secret)) == 1
}

// setReplaced records secret as Replaced; "" clears it.
func (h *Handler) setReplaced(secret string) {
	if secret == "" {
		h.replaced.Store(nil)
		return
	}
	h.replaced.Store(&secret)
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp, err := h.rotate(r)
	if err != nil {
		status := http.StatusInternalServerError
		var he *httpError
		if errors.As(err, &he) {
			status = he.status
		}
		if h.Log != nil {
			h.Log.Warn("token rotation refused", "component", "token", "remote", r.RemoteAddr, "status", status, "err", err)
		}
		http.Error(w, err.Error(), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (h *Handler) rotate(r *http.Request) (*Response, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.Layout
	data, err := os.ReadFile(l.TokenFile())
	if err != nil {
		return nil, fail(http.StatusServiceUnavailable, "this server has no token yet: retry once it has started")
	}
	current, err := token.Parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("token: stored token %s: %w", l.TokenFile(), err)
	}
	given, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if given == "" || subtle.ConstantTimeCompare([]byte(given), []byte(current.Secret)) != 1 {
		return nil, fail(http.StatusUnauthorized, "--token is not this server's current token (<data-dir>/server/token)")
	}
	var req Request
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10)).Decode(&req); err != nil {
		return nil, fail(http.StatusBadRequest, "malformed request: %v", err)
	}
	caPEM, err := os.ReadFile(l.ServerCA().Cert)
	if err != nil {
		return nil, fmt.Errorf("token: reading server CA: %w", err)
	}
	next, err := NewServerToken(req.NewToken, caPEM)
	if err != nil {
		return nil, fail(http.StatusBadRequest, "%v", err)
	}
	if next.Secret == current.Secret {
		return &Response{Token: current.String()}, nil
	}
	if h.Datastore != nil {
		if err := h.shareRotation(r.Context(), current, next); err != nil {
			return nil, err
		}
	}
	// The old token's hash first: should the token write fail, the
	// server still holds (and accepts) the old token.
	if err := controlplane.RetireToken(l, current.Secret); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	if err := controlplane.WriteToken(l, next); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	h.setReplaced("")
	if h.Log != nil {
		h.Log.Info("server token rotated: the old token no longer joins nodes", "component", "token", "remote", r.RemoteAddr)
	}
	return &Response{Token: next.String(), Changed: true}, nil
}

// NewServerToken parses raw as a new server token for the server whose CA
// is caPEM and returns it in full form. A token that does not parse, or a
// full one pinning another CA, is an error starting with "--new-token".
func NewServerToken(raw string, caPEM []byte) (token.Token, error) {
	t, err := ParseNewToken(raw)
	if err != nil {
		return token.Token{}, err
	}
	if !t.IsShort() {
		if err := t.VerifyCA(caPEM); err != nil {
			return token.Token{}, fmt.Errorf("--new-token pins another CA than this server's: %w", err)
		}
	}
	return token.Token{CAHash: token.HashCA(caPEM), Username: "server", Secret: t.Secret}, nil
}

// ParseNewToken checks --new-token's syntax: the error names the flag.
func ParseNewToken(raw string) (token.Token, error) {
	t, err := token.Parse(raw)
	if err != nil {
		return token.Token{}, fmt.Errorf("--new-token: %w", err)
	}
	return t, nil
}

// RefusedError is a rotation the server answered with an error status.
type RefusedError struct {
	Server  string
	Status  int
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("server %s refused the token rotation (%d): %s", e.Server, e.Status, e.Message)
}

// Rotate asks the server at serverURL, over TLS verified with caPEM, to
// replace its token (current, whose secret authenticates) with newToken.
func Rotate(ctx context.Context, serverURL string, caPEM []byte, current token.Token, newToken string) (*Response, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("the server CA holds no certificate")
	}
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	body, _ := json.Marshal(Request{NewToken: newToken})
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimSuffix(serverURL, "/")+Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+current.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rotating the token at %s: %w", serverURL, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, &RefusedError{Server: serverURL, Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	var out Response
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("rotating the token at %s: malformed answer: %w", serverURL, err)
	}
	return &out, nil
}
