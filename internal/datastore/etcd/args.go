package etcd

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/skiffkube/skiff/internal/controlplane/args"
)

// setting applies one --etcd-arg value to etcd's configuration.
type setting func(c *embed.Config, v string) error

// settings are the etcd settings --etcd-arg may change, under etcd's own
// flag names. Addresses, TLS, names and the data dir are skiff's to set.
var settings = map[string]setting{
	"quota-backend-bytes": func(c *embed.Config, v string) (err error) {
		c.QuotaBackendBytes, err = strconv.ParseInt(v, 10, 64)
		return err
	},
	"heartbeat-interval": uintSetting(func(c *embed.Config) *uint { return &c.TickMs }),
	"election-timeout":   uintSetting(func(c *embed.Config) *uint { return &c.ElectionMs }),
	"snapshot-count": func(c *embed.Config, v string) (err error) {
		c.SnapshotCount, err = strconv.ParseUint(v, 10, 64)
		return err
	},
	"snapshot-catchup-entries": func(c *embed.Config, v string) (err error) {
		c.SnapshotCatchUpEntries, err = strconv.ParseUint(v, 10, 64)
		return err
	},
	"max-snapshots":     uintSetting(func(c *embed.Config) *uint { return &c.MaxSnapFiles }),
	"max-wals":          uintSetting(func(c *embed.Config) *uint { return &c.MaxWalFiles }),
	"max-txn-ops":       uintSetting(func(c *embed.Config) *uint { return &c.MaxTxnOps }),
	"max-request-bytes": uintSetting(func(c *embed.Config) *uint { return &c.MaxRequestBytes }),
	"auto-compaction-mode": func(c *embed.Config, v string) error {
		if v != "periodic" && v != "revision" {
			return fmt.Errorf("must be periodic or revision")
		}
		c.AutoCompactionMode = v
		return nil
	},
	"auto-compaction-retention": func(c *embed.Config, v string) error {
		c.AutoCompactionRetention = v
		return nil
	},
	"backend-batch-interval": durationSetting(func(c *embed.Config) *time.Duration { return &c.BackendBatchInterval }),
	"backend-batch-limit": func(c *embed.Config, v string) (err error) {
		c.BackendBatchLimit, err = strconv.Atoi(v)
		return err
	},
	"max-learners": func(c *embed.Config, v string) (err error) {
		c.MaxLearners, err = strconv.Atoi(v)
		return err
	},
	"pre-vote":              boolSetting(func(c *embed.Config) *bool { return &c.PreVote }),
	"strict-reconfig-check": boolSetting(func(c *embed.Config) *bool { return &c.StrictReconfigCheck }),
	"unsafe-no-fsync":       boolSetting(func(c *embed.Config) *bool { return &c.UnsafeNoFsync }),
	"log-level": func(c *embed.Config, v string) error {
		if !slices.Contains([]string{"debug", "info", "warn", "error", "panic", "fatal"}, v) {
			return fmt.Errorf("must be debug, info, warn, error, panic or fatal")
		}
		c.LogLevel = v
		return nil
	},
	"cipher-suites": func(c *embed.Config, v string) error {
		c.CipherSuites = strings.Split(v, ",")
		return nil
	},
	"tls-min-version": func(c *embed.Config, v string) error {
		c.TlsMinVersion = v
		return nil
	},
	"corrupt-check-time":                   durationSetting(func(c *embed.Config) *time.Duration { return &c.CorruptCheckTime }),
	"compact-hash-check-time":              durationSetting(func(c *embed.Config) *time.Duration { return &c.CompactHashCheckTime }),
	"watch-progress-notify-interval":       durationSetting(func(c *embed.Config) *time.Duration { return &c.WatchProgressNotifyInterval }),
	"warning-apply-duration":               durationSetting(func(c *embed.Config) *time.Duration { return &c.WarningApplyDuration }),
	"bootstrap-defrag-threshold-megabytes": uintSetting(func(c *embed.Config) *uint { return &c.BootstrapDefragThresholdMegabytes }),
}

func uintSetting(field func(*embed.Config) *uint) setting {
	return func(c *embed.Config, v string) error {
		n, err := strconv.ParseUint(v, 10, 0)
		*field(c) = uint(n)
		return err
	}
}

func boolSetting(field func(*embed.Config) *bool) setting {
	return func(c *embed.Config, v string) (err error) {
		*field(c), err = strconv.ParseBool(v)
		return err
	}
}

func durationSetting(field func(*embed.Config) *time.Duration) setting {
	return func(c *embed.Config, v string) (err error) {
		*field(c), err = time.ParseDuration(v)
		return err
	}
}

// ApplyArgs applies --etcd-arg key=value settings (a leading "--" on the key
// is allowed) to c. An unknown key or a bad value is an error naming
// --etcd-arg, the key and the value; c may then be partly changed.
func ApplyArgs(c *embed.Config, given []string) error {
	for _, a := range given {
		k, v := args.Split(a)
		k = strings.TrimLeft(k, "-")
		set, ok := settings[k]
		if !ok {
			return fmt.Errorf("--etcd-arg %s: unknown or reserved etcd setting %q (settable: %s)", a, k, strings.Join(SettableArgs(), ", "))
		}
		if err := set(c, v); err != nil {
			return fmt.Errorf("--etcd-arg %s: bad value %q: %w", a, v, unwrapNum(err))
		}
	}
	return nil
}

// CheckArgs reports the first --etcd-arg ApplyArgs would refuse, without
// starting anything.
func CheckArgs(given []string) error {
	return ApplyArgs(embed.NewConfig(), given)
}

// SettableArgs are the keys --etcd-arg accepts, sorted.
func SettableArgs() []string {
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// unwrapNum drops strconv's repetition of the value.
func unwrapNum(err error) error {
	if ne, ok := err.(*strconv.NumError); ok {
		return ne.Err
	}
	return err
}
