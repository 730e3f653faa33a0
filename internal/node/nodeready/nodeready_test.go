package nodeready

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func nodeWith(status corev1.ConditionStatus, heartbeat, transition time.Time) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: status, Message: "because",
			LastHeartbeatTime: metav1.NewTime(heartbeat), LastTransitionTime: metav1.NewTime(transition),
		}}},
	}
}

func TestStatusSince(t *testing.T) {
	start := time.Date(2026, 11, 27, 10, 0, 0, 500e6, time.UTC) // 10:00:00.5
	cases := []struct {
		name                  string
		heartbeat, transition time.Time
		want                  bool
	}{
		{"posted before the restart", start.Add(-time.Hour), start.Add(-2 * time.Hour), false},
		// 10:00:00 in whole seconds may be from before 10:00:00.5: not ours.
		{"same second, maybe earlier", start.Truncate(time.Second), start.Add(-time.Hour), false},
		{"heartbeat after start", start.Add(2 * time.Second), start.Add(-time.Hour), true},
		{"transition after start", start.Add(-time.Hour), start.Add(time.Second), true},
	}
	for _, c := range cases {
		if got := statusSince(nodeWith(corev1.ConditionTrue, c.heartbeat, c.transition), start); got != c.want {
			t.Errorf("%s: statusSince = %v, want %v", c.name, got, c.want)
		}
	}
	if statusSince(&corev1.Node{}, start) {
		t.Error("a node without conditions has no status")
	}
}

func TestCondition(t *testing.T) {
	now := time.Now()
	if err := Condition(nodeWith(corev1.ConditionTrue, now, now)); err != nil {
		t.Errorf("Ready node: %v", err)
	}
	if err := Condition(nodeWith(corev1.ConditionFalse, now, now)); err == nil {
		t.Error("NotReady node reported ready")
	}
	if err := Condition(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}); err == nil {
		t.Error("node without conditions reported ready")
	}
}
