// Package join is the server side of an agent joining the cluster: the agent,
// having checked the server CA against the pin in its token, posts its node name,
// node password and addresses with the token's secret; the server checks the
// secret and the node password, and returns the node's certificates and what the
// node needs of the cluster configuration.
//
// A node that has joined before comes back the same way to renew its
// credentials at every start, but may present its kubelet client certificate
// instead of a token that is still accepted: tokens are for joining, and a
// `skiff token create` token expires.
//
// The node password ties a node name to one machine: the first join stores a hash
// of it in the Secret <node>.node-password.skiff in kube-system, and a later join
// of the same name with another password is refused, so a second machine cannot
// take over an existing node's identity by reusing its name.
package join

import (
	"context"
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffkube/skiff/internal/pki"
)

// FlannelUser is the identity of flannel on agents (see rbacbootstrap).
const FlannelUser = "system:skiff-flannel"

// Path is where the supervisor serves the join API.
const Path = "/v1-skiff/join"

// PasswordSecretNamespace holds the node password Secrets.
const PasswordSecretNamespace = metav1.NamespaceSystem

// PasswordSecretType marks node password Secrets.
const PasswordSecretType corev1.SecretType = "skiff.io/node-password"

// PasswordSecretName is the Secret that holds the hash of nodeName's password.
func PasswordSecretName(nodeName string) string { return nodeName + ".node-password.skiff" }

// Request is what a joining agent sends.
type Request struct {
	NodeName     string   `json:"nodeName"`
	NodePassword string   `json:"nodePassword"`
	Hostname     string   `json:"hostname"`
	NodeIPs      []string `json:"nodeIPs"`
	// PublicKeys, optional, maps a leaf (LeafKubeletClient, ...) to the PEM
	// public key ("PUBLIC KEY") of the private key the node already holds
	// for it. The server signs that key and sends no key back for the
	// leaf, so a renewal replaces only the certificate file and the node's
	// certificate and key never disagree. A leaf not listed gets a new key,
	// as on the first join.
	PublicKeys map[string]string `json:"publicKeys,omitempty"`
}

// The leaves a node's join answer carries, as named in Request.PublicKeys.
const (
	LeafKubeletClient  = "kubeletClient"
	LeafKubeletServing = "kubeletServing"
	LeafKubeProxy      = "kubeProxy"
	LeafFlannel        = "flannel"
)

// Leaves lists the leaf names of Request.PublicKeys.
var Leaves = []string{LeafKubeletClient, LeafKubeletServing, LeafKubeProxy, LeafFlannel}

// Cluster is what a node needs of the cluster's configuration.
type Cluster struct {
	ClusterCIDR    string `json:"clusterCIDR"`
	ServiceCIDR    string `json:"serviceCIDR"`
	ClusterDNS     string `json:"clusterDNS"`
	ClusterDomain  string `json:"clusterDomain"`
	FlannelBackend string `json:"flannelBackend"`
	// DisableNetworkPolicy: nodes enforce NetworkPolicies unless the
	// server's --disable-network-policy says not to.
	DisableNetworkPolicy bool `json:"disableNetworkPolicy,omitempty"`
	// SystemDefaultRegistry is the server's --system-default-registry: the
	// registry host of the images skiff references (the pause image).
	SystemDefaultRegistry string `json:"systemDefaultRegistry,omitempty"`
}

// Response carries the node's credentials, all PEM. A key is empty for a
// leaf whose public key the request carried: the node keeps its own.
type Response struct {
	ServerCA           string  `json:"serverCA"`
	ClientCA           string  `json:"clientCA"`
	KubeletClientCert  string  `json:"kubeletClientCert"`
	KubeletClientKey   string  `json:"kubeletClientKey"`
	KubeletServingCert string  `json:"kubeletServingCert"`
	KubeletServingKey  string  `json:"kubeletServingKey"`
	KubeProxyCert      string  `json:"kubeProxyCert"`
	KubeProxyKey       string  `json:"kubeProxyKey"`
	FlannelCert        string  `json:"flannelCert"`
	FlannelKey         string  `json:"flannelKey"`
	Cluster            Cluster `json:"cluster"`
}

// Server is the join API's handler.
type Server struct {
	// Secrets are the token secrets that may join (the cluster token's, an
	// agent token's). Looked up per request: tokens may change at run time.
	Secrets func() []string
	// Bootstrap, when set, accepts a `skiff token create` token ("<id>.<secret>").
	Bootstrap func(ctx context.Context, given string) bool
	// CAs returns the client and server CAs.
	CAs func() (client, server *pki.CA, err error)
	// Client reaches the API for the node password Secrets.
	Client  func() (kubernetes.Interface, error)
	Cluster Cluster
	// TLSSANs are the server's --tls-san values: names and addresses of the
	// apiserver, which no kubelet serving certificate may carry.
	TLSSANs []string
	Log     *slog.Logger
	Now     func() time.Time
}

// httpError is an error with the status the agent gets.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp, err := s.join(r)
	if err != nil {
		status := http.StatusInternalServerError
		var he *httpError
		if errors.As(err, &he) {
			status = he.status
		}
		if s.Log != nil {
			s.Log.Warn("join refused", "component", "join", "remote", r.RemoteAddr, "status", status, "err", err)
		}
		http.Error(w, err.Error(), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// RefusedTokenMessage is the answer to a join whose token no longer (or never)
// let it in, and which holds no node certificate of its own.
const RefusedTokenMessage = "token not accepted by this server: check --token (it must be the server's token, an agent token, " +
	"or a `skiff token create` token, which may have expired or been deleted: create a new one with `skiff token create`)"

func (s *Server) join(r *http.Request) (*Response, error) {
	tokenOK := s.authorized(r)
	// A node that joined before presents its kubelet client certificate:
	// tokens are for joining, and a `skiff token create` token may be gone
	// by the time the agent restarts.
	certNode := ""
	if !tokenOK {
		certNode = s.certificateNode(r)
		if certNode == "" {
			return nil, fail(http.StatusUnauthorized, "%s", RefusedTokenMessage)
		}
	}
	var req Request
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10)).Decode(&req); err != nil {
		return nil, fail(http.StatusBadRequest, "malformed join request: %v", err)
	}
	if certNode != "" && certNode != req.NodeName {
		return nil, fail(http.StatusForbidden, "the client certificate is node %q's, not %q's: a node may renew only its own credentials", certNode, req.NodeName)
	}
	ips, err := validate(req)
	if err != nil {
		return nil, err
	}
	pubs, err := publicKeys(req.PublicKeys)
	if err != nil {
		return nil, err
	}
	client, err := s.Client()
	if err != nil {
		return nil, fmt.Errorf("join: API client: %w", err)
	}
	// The node password is checked on both ways in: a stolen certificate
	// alone does not let another machine take the name.
	// On the certificate's way in, the password must already be stored:
	// `kubectl delete node` deletes it, and a removed machine must not come
	// back on a certificate it kept (it joins again with a token).
	if err := checkPassword(r.Context(), client, req.NodeName, req.NodePassword, tokenOK); err != nil {
		return nil, err
	}
	clientCA, serverCA, err := s.CAs()
	if err != nil {
		return nil, fmt.Errorf("join: loading CAs: %w", err)
	}
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	resp := &Response{ServerCA: string(serverCA.CertPEM), ClientCA: string(clientCA.CertPEM), Cluster: s.Cluster}
	dns, servingIPs, dropped := s.servingSANs(req, ips)
	if len(dropped) > 0 && s.Log != nil {
		s.Log.Warn("left out of the node's kubelet serving certificate: the apiserver's names and addresses", "component", "join", "node", req.NodeName, "dropped", dropped)
	}
	for _, leaf := range []struct {
		name      string
		ca        *pki.CA
		spec      pki.LeafSpec
		cert, key *string
	}{
		{LeafKubeletClient, clientCA, pki.NodeClientSpec(req.NodeName), &resp.KubeletClientCert, &resp.KubeletClientKey},
		{LeafKubeletServing, serverCA, pki.LeafSpec{CommonName: req.NodeName, DNSNames: dns, IPs: servingIPs, Usage: pki.ServerAuth}, &resp.KubeletServingCert, &resp.KubeletServingKey},
		{LeafKubeProxy, clientCA, pki.LeafSpec{CommonName: "system:kube-proxy", Usage: pki.ClientAuth}, &resp.KubeProxyCert, &resp.KubeProxyKey},
		// flannel lists nodes; the kubelet's identity may read only its own.
		{LeafFlannel, clientCA, pki.LeafSpec{CommonName: FlannelUser, Usage: pki.ClientAuth}, &resp.FlannelCert, &resp.FlannelKey},
	} {
		if pub, ok := pubs[leaf.name]; ok {
			cert, err := leaf.ca.SignPublicKey(pub, leaf.spec, now)
			if err != nil {
				return nil, fmt.Errorf("join: issuing %s: %w", leaf.spec.CommonName, err)
			}
			*leaf.cert = string(cert)
			continue
		}
		cert, key, err := leaf.ca.IssueLeaf(leaf.spec, now)
		if err != nil {
			return nil, fmt.Errorf("join: issuing %s: %w", leaf.spec.CommonName, err)
		}
		*leaf.cert, *leaf.key = string(cert), string(key)
	}
	if s.Log != nil {
		how := "token"
		if certNode != "" {
			how = "node certificate"
		}
		s.Log.Info("node joined", "component", "join", "node", req.NodeName, "remote", r.RemoteAddr, "with", how)
	}
	return resp, nil
}

// authorized compares the bearer secret with every accepted one in constant time.
func (s *Server) authorized(r *http.Request) bool {
	given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || given == "" {
		return false
	}
	match := 0
	for _, secret := range s.Secrets() {
		if secret != "" {
			match |= subtle.ConstantTimeCompare([]byte(given), []byte(secret))
		}
	}
	if match == 1 {
		return true
	}
	return s.Bootstrap != nil && s.Bootstrap(r.Context(), given)
}

// certificateNode is the node name in the request's client certificate when
// it is a kubelet client certificate (system:node:<name> in group
// system:nodes, client auth) that the cluster's client CA signed and that has
// not expired; "" otherwise.
func (s *Server) certificateNode(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || s.CAs == nil {
		return ""
	}
	clientCA, _, err := s.CAs()
	if err != nil {
		return ""
	}
	roots := x509.NewCertPool()
	roots.AddCert(clientCA.Cert)
	var now time.Time
	if s.Now != nil {
		now = s.Now()
	}
	name, err := pki.VerifyNodeClient(r.TLS.PeerCertificates[0], nil, roots, now)
	if err != nil {
		return ""
	}
	return name
}

func validate(req Request) ([]net.IP, error) {
	if msgs := validation.IsDNS1123Subdomain(req.NodeName); len(msgs) > 0 {
		return nil, fail(http.StatusBadRequest, "invalid node name %q: %s", req.NodeName, strings.Join(msgs, "; "))
	}
	if req.Hostname != "" {
		if msgs := validation.IsDNS1123Subdomain(req.Hostname); len(msgs) > 0 {
			return nil, fail(http.StatusBadRequest, "invalid hostname %q: %s", req.Hostname, strings.Join(msgs, "; "))
		}
	}
	if len(req.NodePassword) < 16 {
		return nil, fail(http.StatusBadRequest, "node password must be at least 16 characters")
	}
	if len(req.NodeIPs) == 0 {
		return nil, fail(http.StatusBadRequest, "no node IP given")
	}
	var ips []net.IP
	for _, s := range req.NodeIPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fail(http.StatusBadRequest, "invalid node IP %q", s)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// publicKeys parses Request.PublicKeys: a name not in Leaves or a key that
// is not one PEM public key of a supported type is refused (400), naming it.
func publicKeys(in map[string]string) (map[string]crypto.PublicKey, error) {
	out := make(map[string]crypto.PublicKey, len(in))
	for name, p := range in {
		if !slices.Contains(Leaves, name) {
			return nil, fail(http.StatusBadRequest, "publicKeys: unknown leaf %q (known: %s)", name, strings.Join(Leaves, ", "))
		}
		pub, err := pki.ParsePublicKeyPEM([]byte(p))
		if err != nil {
			return nil, fail(http.StatusBadRequest, "publicKeys.%s: %v", name, err)
		}
		out[name] = pub
	}
	return out, nil
}

// servingSANs are the kubelet serving certificate's names and addresses:
// the node name, its hostname and its IPs, less what the apiserver's
// serving certificate answers to. The server CA signs both, so a kubelet
// certificate for kubernetes.default.svc, localhost, a loopback address,
// the kubernetes Service's ClusterIP or a --tls-san would let whoever holds
// a token or a node's certificate pose as the apiserver. dropped lists
// what was left out.
func (s *Server) servingSANs(req Request, ips []net.IP) (dns []string, out []net.IP, dropped []string) {
	reservedDNS := map[string]bool{"localhost": true, "kubernetes": true, "kubernetes.default": true, "kubernetes.default.svc": true}
	if d := strings.TrimSuffix(s.Cluster.ClusterDomain, "."); d != "" {
		reservedDNS["kubernetes.default.svc."+strings.ToLower(d)] = true
	}
	reservedIP := map[string]bool{}
	for _, san := range s.TLSSANs {
		if ip := net.ParseIP(strings.TrimSpace(san)); ip != nil {
			reservedIP[ip.String()] = true
		} else if san != "" {
			reservedDNS[strings.ToLower(strings.TrimSuffix(strings.TrimSpace(san), "."))] = true
		}
	}
	for _, ip := range serviceIPs(s.Cluster.ServiceCIDR) {
		reservedIP[ip.String()] = true
	}
	for _, n := range []string{req.NodeName, req.Hostname} {
		n = strings.ToLower(n)
		switch {
		case n == "" || slices.Contains(dns, n) || slices.Contains(dropped, n):
		case reservedDNS[n] || strings.HasSuffix(n, ".localhost"):
			dropped = append(dropped, n)
		default:
			dns = append(dns, n)
		}
	}
	for _, ip := range ips {
		switch {
		case slices.ContainsFunc(out, ip.Equal):
		case ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() || reservedIP[ip.String()]:
			dropped = append(dropped, ip.String())
		default:
			out = append(out, ip)
		}
	}
	return dns, out, dropped
}

// serviceIPs are the first address of each range of a --service-cidr value
// (the kubernetes Service's ClusterIP); unparsable ranges are skipped.
func serviceIPs(cidrs string) []net.IP {
	var out []net.IP
	for _, c := range strings.Split(cidrs, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			continue
		}
		out = append(out, net.IP(p.Masked().Addr().Next().AsSlice()))
	}
	return out
}

// checkPassword stores the password's hash on a node name's first join and
// compares with it afterwards. mayStore is false for a node that presents a
// certificate instead of a token: it is refused (403) when no hash is stored,
// since the Node, and with it the hash, was deleted.
func checkPassword(ctx context.Context, client kubernetes.Interface, nodeName, password string, mayStore bool) error {
	secrets := client.CoreV1().Secrets(PasswordSecretNamespace)
	name := PasswordSecretName(nodeName)
	for attempt := 0; attempt < 2; attempt++ {
		sec, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if bcrypt.CompareHashAndPassword(sec.Data["hash"], []byte(password)) != nil {
				return fail(http.StatusForbidden,
					"node name %q is taken by another machine (its node password differs): if that machine is gone, run `kubectl delete node %s` and `kubectl -n %s delete secret %s`, or join this machine with another --node-name",
					nodeName, nodeName, PasswordSecretNamespace, name)
			}
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("join: reading %s/%s: %w", PasswordSecretNamespace, name, err)
		}
		if !mayStore {
			return fail(http.StatusForbidden,
				"node %q was removed from the cluster (kubectl delete node): its certificate no longer lets it in; join it again with a token (--token)", nodeName)
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
		if err != nil {
			return fmt.Errorf("join: hashing node password: %w", err)
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: PasswordSecretNamespace, Labels: map[string]string{"skiff.io/node": nodeName}},
			Type:       PasswordSecretType,
			Data:       map[string][]byte{"hash": hash},
		}, metav1.CreateOptions{})
		if err == nil {
			return nil
		}
		// Two joins of the same name at once: compare with the winner's.
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("join: creating %s/%s: %w", PasswordSecretNamespace, name, err)
		}
	}
	return fmt.Errorf("join: %s/%s keeps changing", PasswordSecretNamespace, name)
}
