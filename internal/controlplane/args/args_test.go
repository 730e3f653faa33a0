package args

import (
	"reflect"
	"strings"
	"testing"

	cliflag "k8s.io/component-base/cli/flag"
)

func TestBuildUserOverridesAndAppends(t *testing.T) {
	got := Build(map[string]string{"secure-port": "6444", "profiling": "false"},
		[]string{"profiling=true", "--v=4", "enable-foo", "audit-log-path=/x=y"})
	want := []string{"--profiling=true", "--secure-port=6444", "--v=4", "--enable-foo=true", "--audit-log-path=/x=y"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func TestHas(t *testing.T) {
	if !Has([]string{"--anonymous-auth=true"}, "anonymous-auth") || Has([]string{"anonymous"}, "anonymous-auth") {
		t.Fatal("Has misreads keys")
	}
}

func TestValueLastEntryWins(t *testing.T) {
	user := []string{"port=1", "--address=127.0.0.1", "--port=2"}
	if v, ok := Value(user, "port"); !ok || v != "2" {
		t.Fatalf("Value(port) = %q, %v; want the last entry, 2", v, ok)
	}
	if v, ok := Value(user, "healthz-port"); ok || v != "" {
		t.Fatalf("Value(unset key) = %q, %v", v, ok)
	}
}

func TestParseNamesThePassthroughFlag(t *testing.T) {
	var fss cliflag.NamedFlagSets
	port := fss.FlagSet("serving").Int("secure-port", 0, "")
	if err := Parse("kube-scheduler", "kube-scheduler-arg", fss, []string{"--secure-port=9"}); err != nil || *port != 9 {
		t.Fatalf("parse: %v port=%d", err, *port)
	}
	err := Parse("kube-scheduler", "kube-scheduler-arg", fss, []string{"--no-such-flag=1"})
	if err == nil || !strings.Contains(err.Error(), "--kube-scheduler-arg") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("want error naming --kube-scheduler-arg and the flag, got %v", err)
	}
}
