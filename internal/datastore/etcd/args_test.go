package etcd

import (
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func TestApplyArgsMapsOntoEmbedConfig(t *testing.T) {
	c := embed.NewConfig()
	err := ApplyArgs(c, []string{
		"quota-backend-bytes=8589934592",
		"--heartbeat-interval=250",
		"election-timeout=2500",
		"snapshot-count=5000",
		"auto-compaction-mode=periodic",
		"auto-compaction-retention=1h",
		"backend-batch-interval=50ms",
		"pre-vote=false",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.QuotaBackendBytes != 8589934592 || c.TickMs != 250 || c.ElectionMs != 2500 || c.SnapshotCount != 5000 ||
		c.AutoCompactionMode != "periodic" || c.AutoCompactionRetention != "1h" || c.BackendBatchInterval != 50*time.Millisecond || c.PreVote {
		t.Fatalf("settings not applied: %+v", c)
	}
}

func TestApplyArgsRefusesUnknownAndBadValues(t *testing.T) {
	for _, tc := range []struct{ arg, want string }{
		{"data-dir=/tmp/x", `--etcd-arg data-dir=/tmp/x: unknown or reserved etcd setting "data-dir"`},
		{"no-such=1", `--etcd-arg no-such=1: unknown or reserved etcd setting "no-such"`},
		{"heartbeat-interval=fast", `--etcd-arg heartbeat-interval=fast: bad value "fast"`},
		{"auto-compaction-mode=daily", `--etcd-arg auto-compaction-mode=daily: bad value "daily": must be periodic or revision`},
	} {
		err := CheckArgs([]string{tc.arg})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want prefix %q", tc.arg, err, tc.want)
		}
	}
}
