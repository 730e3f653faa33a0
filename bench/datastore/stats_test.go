package main

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var sorted []time.Duration
	for i := 1; i <= 200; i++ {
		sorted = append(sorted, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 100 * time.Millisecond}, {99, 198 * time.Millisecond}, {100, 200 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := percentile(sorted, c.p); got != c.want {
			t.Errorf("percentile(1..200 ms, %v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(sorted[:3], 99); got != 3*time.Millisecond {
		t.Errorf("p99 of three values = %v, want the largest", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing = %v, want 0", got)
	}
}

func TestSummarizeRate(t *testing.T) {
	var r recorder
	for range 50 {
		r.add(time.Millisecond)
	}
	r.fail(errors.New("boom"))
	r.addWall(4 * time.Second)
	r.addWall(6 * time.Second)
	s := r.summarize()
	if s.n != 50 || s.errs != 1 || s.first == nil || s.rate != 5 || s.p50 != time.Millisecond {
		t.Errorf("summary = %+v, want 50 ops, 1 error, 5/s, p50 1ms", s)
	}
}

// The objects are what the apiserver would store: valid JSON of a
// ConfigMap, 1-2 KiB, different on every write.
func TestObjectIsARealisticConfigMap(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	a, b := object(42, 1, rnd), object(42, 2, rnd)
	var cm struct {
		Kind     string
		Metadata struct{ Name, Namespace string }
		Data     map[string]string
	}
	if err := json.Unmarshal(a, &cm); err != nil {
		t.Fatalf("object is not JSON: %v\n%s", err, a)
	}
	if cm.Kind != "ConfigMap" || cm.Metadata.Name != "cm-00042" || cm.Metadata.Namespace != "bench" || len(cm.Data["config.yaml"]) == 0 {
		t.Errorf("object = %+v, want ConfigMap bench/cm-00042 with data", cm)
	}
	if len(a) < 1024 || len(a) > 2048 {
		t.Errorf("object is %d bytes, want 1-2 KiB", len(a))
	}
	if string(a) == string(b) {
		t.Error("two generations of an object are identical")
	}
	if got := keyOf(42); got != "/registry/configmaps/bench/cm-00042" {
		t.Errorf("keyOf(42) = %q", got)
	}
}
