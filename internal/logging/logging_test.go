package logging

import (
	"bytes"
	stdlog "log"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"k8s.io/klog/v2"
)

func TestConsoleLineCarriesComponent(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, Options{})
	log.With("component", "apiserver").Info("apiserver ready in 1.2s", "port", 6444, "note", "two words")
	got := buf.String()
	for _, want := range []string{"INFO  apiserver: apiserver ready in 1.2s", "port=6444", `note="two words"`} {
		if !strings.Contains(got, want) {
			t.Fatalf("line %q lacks %q", got, want)
		}
	}
}

func TestUpstreamLogsHiddenUnlessDebug(t *testing.T) {
	var buf bytes.Buffer
	_ = New(&buf, Options{})
	klog.InfoS("apiserver chatter")
	klog.ErrorS(nil, "apiserver complaint")
	logrus.Info("kine chatter")
	klog.Flush()
	if strings.Contains(buf.String(), "chatter") || strings.Contains(buf.String(), "complaint") {
		t.Fatalf("upstream output leaked at default level: %q", buf.String())
	}
	logrus.Error("kine failure")
	if !strings.Contains(buf.String(), "kine: kine failure") {
		t.Fatalf("kine errors must stay visible: %q", buf.String())
	}

	buf.Reset()
	_ = New(&buf, Options{Verbosity: 2})
	klog.V(2).InfoS("verbose two")
	klog.V(3).InfoS("verbose three")
	klog.Flush()
	if !strings.Contains(buf.String(), "k8s: verbose two") {
		t.Fatalf("-v 2 should show V(2): %q", buf.String())
	}
	if strings.Contains(buf.String(), "verbose three") {
		t.Fatalf("-v 2 should hide V(3): %q", buf.String())
	}
}

func TestStdlibLinesRouted(t *testing.T) {
	var buf bytes.Buffer
	_ = New(&buf, Options{})
	stdlog.Print("[INFO] plugin/kubernetes: chatter")
	stdlog.Print("[ERROR] plugin/errors: 2 example.org. A: i/o timeout")
	if buf.Len() != 0 {
		t.Fatalf("routine CoreDNS lines shown at the default level: %q", buf.String())
	}
	stdlog.Print("[ERROR] plugin/kubernetes: cannot list services")
	if !strings.Contains(buf.String(), "WARN  coredns: kubernetes: cannot list services") {
		t.Fatalf("a CoreDNS error should be a warning naming the plugin: %q", buf.String())
	}
	buf.Reset()
	_ = New(&buf, Options{Debug: true})
	stdlog.Print("[INFO] plugin/kubernetes: chatter")
	if !strings.Contains(buf.String(), "DEBUG coredns: kubernetes: chatter") {
		t.Fatalf("debug output lacks the CoreDNS line: %q", buf.String())
	}
}
