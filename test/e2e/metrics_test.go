package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricValue finds the sample of name whose labels contain every
// key="value" in labels, in Prometheus text format, and parses its value.
func metricValue(text, name string, labels ...string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		base, lbls, _ := strings.Cut(series, "{")
		if base != name {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(lbls, l)
		}
		if !all {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		return v, err == nil
	}
	return 0, false
}

// checkServerMetrics asserts that the supervisor serves skiff's own metrics
// at /metrics to the admin, and only to an authenticated client; agentNode,
// when set, must have an open tunnel session on this server.
func checkServerMetrics(t *testing.T, s *server, agentNode string) {
	t.Helper()
	// The datastore is read once at start; the tunnel gauge is set when the
	// session opens: both are there by the time the agent is ready.
	var text string
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := s.kubectl("get", "--raw", "/metrics")
		text = out
		_, haveDS := metricValue(text, "skiff_datastore_size_bytes")
		if err == nil && haveDS {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /metrics as admin: %v, no skiff_datastore_size_bytes in:\n%.2000s", err, out)
		}
		time.Sleep(time.Second)
	}
	if v, ok := metricValue(text, "skiff_startup_phase_seconds", `phase="ready"`); !ok || v <= 0 {
		t.Errorf("skiff_startup_phase_seconds{phase=\"ready\"} = %v, %v; want a positive duration", v, ok)
	}
	if v, ok := metricValue(text, "skiff_startup_phase_seconds", `phase="apiserver"`); !ok || v <= 0 {
		t.Errorf("skiff_startup_phase_seconds{phase=\"apiserver\"} = %v, %v; want a positive duration", v, ok)
	}
	if v, _ := metricValue(text, "skiff_datastore_size_bytes"); v <= 0 {
		t.Errorf("skiff_datastore_size_bytes = %v; want the datastore's size", v)
	}
	if v, _ := metricValue(text, "skiff_datastore_revision"); v <= 0 {
		t.Errorf("skiff_datastore_revision = %v; want the datastore's revision", v)
	}
	if agentNode != "" {
		if v, ok := metricValue(text, "skiff_tunnel_sessions", `node="`+agentNode+`"`); !ok || v < 1 {
			t.Errorf("skiff_tunnel_sessions{node=%q} = %v, %v; want at least 1", agentNode, v, ok)
		}
	}
	// The embedded apiserver's own metrics stay where upstream serves them.
	if _, ok := metricValue(text, "apiserver_request_total"); !ok {
		t.Errorf("the apiserver's own metrics are missing from /metrics")
	}

	// Without credentials, nothing.
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get(s.URL() + "/metrics")
	if err != nil {
		t.Fatalf("anonymous GET /metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden || strings.Contains(string(body), "skiff_") {
		t.Errorf("anonymous GET /metrics: %s\n%.500s", resp.Status, body)
	}
}
