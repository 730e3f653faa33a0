package helmcontroller

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestOwnStatusWritesDoNotWakeTheController(t *testing.T) {
	obj := func(rv string, gen int64, finalizers []string, deleting bool, phase string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]interface{}{"status": map[string]interface{}{"phase": phase}}}
		u.SetResourceVersion(rv)
		u.SetGeneration(gen)
		u.SetFinalizers(finalizers)
		if deleting {
			now := metav1.Now()
			u.SetDeletionTimestamp(&now)
		}
		return u
	}
	base := obj("1", 1, []string{Finalizer}, false, "Installing")
	for name, tc := range map[string]struct {
		next *unstructured.Unstructured
		want bool
	}{
		"status written":     {obj("2", 1, []string{Finalizer}, false, "Failed"), true},
		"spec changed":       {obj("2", 2, []string{Finalizer}, false, "Installing"), false},
		"finalizer added":    {obj("2", 1, []string{"x", Finalizer}, false, "Installing"), false},
		"deleted":            {obj("2", 1, []string{Finalizer}, true, "Installing"), false},
		"resync, no changes": {obj("1", 1, []string{Finalizer}, false, "Installing"), false},
	} {
		if got := statusOnly(base, tc.next); got != tc.want {
			t.Errorf("%s: statusOnly = %v, want %v", name, got, tc.want)
		}
	}
}
