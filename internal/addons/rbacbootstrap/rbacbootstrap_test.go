package rbacbootstrap

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiffkube/skiff/internal/join"
)

func TestApplyIsIdempotentAndNarrow(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	for i := 0; i < 2; i++ {
		if err := Apply(ctx, c); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	role, err := c.RbacV1().ClusterRoles().Get(ctx, flannelRole, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range role.Rules {
		for _, v := range r.Verbs {
			if v == "*" || v == "delete" || (v == "create" && r.Resources[0] != "events") {
				t.Errorf("flannel role grants %s on %v", v, r.Resources)
			}
		}
	}
	b, err := c.RbacV1().ClusterRoleBindings().Get(ctx, flannelRole, metav1.GetOptions{})
	if err != nil || len(b.Subjects) != 1 || b.Subjects[0].Name != join.FlannelUser {
		t.Fatalf("binding %+v %v", b, err)
	}
}
