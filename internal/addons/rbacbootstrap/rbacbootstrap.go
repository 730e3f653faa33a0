// Package rbacbootstrap creates the RBAC objects skiff's own identities need
// beyond Kubernetes' defaults. A node's network components run as the user
// system:skiff-flannel: flannel lists nodes and patches node status; the
// network policy engine reads pods, namespaces and NetworkPolicies and
// records events. Nothing more: they never write pods or policies.
package rbacbootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/join"
)

const flannelRole = "skiff:flannel"

// Bootstrap is the component: it applies the objects once at start.
type Bootstrap struct {
	kubeconfig string
	client     kubernetes.Interface
	log        *slog.Logger
	done       atomic.Bool
}

// New returns the component; client may be nil to build one from kubeconfig.
func New(kubeconfig string, client kubernetes.Interface, log *slog.Logger) *Bootstrap {
	return &Bootstrap{kubeconfig: kubeconfig, client: client, log: log.With("component", "rbac")}
}

func (b *Bootstrap) Name() string { return "rbac" }

func (b *Bootstrap) Init(context.Context) error {
	if b.client != nil {
		return nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", b.kubeconfig)
	if err != nil {
		return fmt.Errorf("rbac: loading %s: %w", b.kubeconfig, err)
	}
	b.client, err = kubernetes.NewForConfig(rc)
	return err
}

// Start applies the objects; it runs during start-up and has no long-running work.
func (b *Bootstrap) Start(ctx context.Context) error {
	if err := Apply(ctx, b.client); err != nil {
		return err
	}
	b.done.Store(true)
	return nil
}

func (b *Bootstrap) Ready() error {
	if !b.done.Load() {
		return errors.New("not applied")
	}
	return nil
}

func (b *Bootstrap) Stop() error { return nil }

// Apply creates or updates the ClusterRole and its binding.
func Apply(ctx context.Context, c kubernetes.Interface) error {
	labels := map[string]string{"app.kubernetes.io/managed-by": "skiff"}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: flannelRole, Labels: labels},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
			{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: flannelRole, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: flannelRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: join.FlannelUser}},
	}
	roles := c.RbacV1().ClusterRoles()
	if cur, err := roles.Get(ctx, role.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := roles.Create(ctx, role, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("rbac: creating ClusterRole %s: %w", role.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("rbac: reading ClusterRole %s: %w", role.Name, err)
	} else {
		cur.Rules = role.Rules
		if _, err := roles.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("rbac: updating ClusterRole %s: %w", role.Name, err)
		}
	}
	bindings := c.RbacV1().ClusterRoleBindings()
	if _, err := bindings.Get(ctx, binding.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := bindings.Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("rbac: creating ClusterRoleBinding %s: %w", binding.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("rbac: reading ClusterRoleBinding %s: %w", binding.Name, err)
	}
	return nil
}
