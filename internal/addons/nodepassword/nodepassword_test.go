package nodepassword

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiffkube/skiff/internal/join"
)

func TestDeletingANodeFreesItsName(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gone"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "stays"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: join.PasswordSecretName("gone"), Namespace: join.PasswordSecretNamespace}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: join.PasswordSecretName("stays"), Namespace: join.PasswordSecretNamespace}},
	)
	c := New("", client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for c.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("never synced")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := client.CoreV1().Nodes().Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	secrets := client.CoreV1().Secrets(join.PasswordSecretNamespace)
	for {
		_, err := secrets.Get(ctx, join.PasswordSecretName("gone"), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("password secret of the deleted node is still there")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := secrets.Get(ctx, join.PasswordSecretName("stays"), metav1.GetOptions{}); err != nil {
		t.Errorf("password secret of a remaining node was touched: %v", err)
	}
}
