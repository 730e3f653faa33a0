// Package bootstraptoken manages the join tokens that `skiff token` creates:
// Kubernetes bootstrap token Secrets (kube-system/bootstrap-token-<id>), so they
// expire and are cleaned up by the controller-manager's token cleaner like any
// bootstrap token. Such a token lets an agent join; it does not make a server.
package bootstraptoken

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const (
	namespace  = metav1.NamespaceSystem
	secretType = corev1.SecretType("bootstrap.kubernetes.io/token")
	prefix     = "bootstrap-token-"
	// usage marks skiff's tokens among other bootstrap tokens.
	usage = "usage-skiff-join"
)

var tokenRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

// Info describes a token without its secret.
type Info struct {
	ID          string
	Description string
	Expires     time.Time // zero: never
	Created     time.Time
}

// Create stores a new token valid for ttl (0: no expiry) and returns it as
// "<id>.<secret>".
func Create(ctx context.Context, c kubernetes.Interface, ttl time.Duration, description string, now time.Time) (string, error) {
	if ttl < 0 {
		return "", fmt.Errorf("ttl %s: must not be negative", ttl)
	}
	id, err := random(6)
	if err != nil {
		return "", err
	}
	secret, err := random(16)
	if err != nil {
		return "", err
	}
	data := map[string][]byte{
		"token-id":     []byte(id),
		"token-secret": []byte(secret),
		"description":  []byte(description),
		usage:          []byte("true"),
	}
	if ttl > 0 {
		data["expiration"] = []byte(now.Add(ttl).UTC().Format(time.RFC3339))
	}
	_, err = c.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + id, Namespace: namespace},
		Type:       secretType,
		Data:       data,
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("creating token secret %s/%s: %w", namespace, prefix+id, err)
	}
	return id + "." + secret, nil
}

// List returns skiff's join tokens, oldest first.
func List(ctx context.Context, c kubernetes.Interface) ([]Info, error) {
	list, err := c.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(secretType)})
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	var out []Info
	for _, s := range list.Items {
		if string(s.Data[usage]) != "true" {
			continue
		}
		info := Info{ID: string(s.Data["token-id"]), Description: string(s.Data["description"]), Created: s.CreationTimestamp.Time}
		if exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"])); err == nil {
			info.Expires = exp
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Delete removes the token with id (or given as a whole token).
func Delete(ctx context.Context, c kubernetes.Interface, idOrToken string) error {
	id, _, _ := strings.Cut(idOrToken, ".")
	if !regexp.MustCompile(`^[a-z0-9]{6}$`).MatchString(id) {
		return fmt.Errorf("%q is not a token ID (6 characters a-z, 0-9)", idOrToken)
	}
	err := c.CoreV1().Secrets(namespace).Delete(ctx, prefix+id, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no token with ID %s", id)
	}
	return err
}

// Valid reports whether given ("<id>.<secret>") is a current skiff join token.
func Valid(ctx context.Context, c kubernetes.Interface, given string, now time.Time) bool {
	m := tokenRE.FindStringSubmatch(given)
	if m == nil {
		return false
	}
	s, err := c.CoreV1().Secrets(namespace).Get(ctx, prefix+m[1], metav1.GetOptions{})
	if err != nil || s.Type != secretType || string(s.Data[usage]) != "true" {
		return false
	}
	if subtle.ConstantTimeCompare(s.Data["token-secret"], []byte(m[2])) != 1 {
		return false
	}
	if exp := string(s.Data["expiration"]); exp != "" {
		t, err := time.Parse(time.RFC3339, exp)
		if err != nil || !now.Before(t) {
			return false
		}
	}
	return true
}

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func random(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		// 256 is not a multiple of 36; the bias (under 1%) does not matter
		// for a 16-character secret.
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}
