package host

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
)

// Sysctl returns the value of a dotted sysctl key (net.ipv4.ip_forward),
// read from /proc/sys, without the trailing newline.
func (h Host) Sysctl(key string) (string, error) {
	data, err := os.ReadFile(h.sysctlPath(key))
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(data)), nil
}

func (h Host) setSysctl(key, value string) error {
	// No O_CREATE: a missing sysctl is a missing kernel feature, not a file
	// to make.
	f, err := os.OpenFile(h.sysctlPath(key), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("setting sysctl %s: %w", key, err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("setting sysctl %s: %w", key, err)
	}
	return nil
}

func (h Host) sysctlPath(key string) string {
	return h.ProcPath("sys", strings.ReplaceAll(key, ".", "/"))
}

// errNoBridgeNetfilter explains the one sysctl failure a user can fix and
// skiff cannot: loading a module takes modprobe, which skiff does not run.
var errNoBridgeNetfilter = errors.New("the net.bridge sysctls are missing, so the br_netfilter kernel module is not loaded: " +
	"run `modprobe br_netfilter` (and add it to /etc/modules-load.d) or use a kernel with CONFIG_BRIDGE_NETFILTER; run `skiff check-config` for details")

// EnsureSysctls sets the sysctls pods need to reach each other and services:
// IP forwarding, and bridged traffic passing through iptables so that
// kube-proxy's rules see pod-to-pod traffic on the same bridge. It writes
// only values that differ and logs one line per change, so an already
// prepared host starts silently. log should carry the caller's component.
//
// It fails, changing nothing, when br_netfilter is not loaded.
func (h Host) EnsureSysctls(log *slog.Logger) error {
	if _, err := os.Stat(h.ProcPath("sys/net/bridge")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errNoBridgeNetfilter
		}
		return fmt.Errorf("checking the net.bridge sysctls: %w", err)
	}
	want := []struct{ key, value string }{
		{"net.ipv4.ip_forward", "1"},
		{"net.bridge.bridge-nf-call-iptables", "1"},
		{"net.bridge.bridge-nf-call-ip6tables", "1"},
	}
	// A kernel booted with ipv6.disable=1 has no net.ipv6 at all.
	if _, err := os.Stat(h.ProcPath("sys/net/ipv6")); err == nil {
		want = append(want, struct{ key, value string }{"net.ipv6.conf.all.forwarding", "1"})
	}
	for _, s := range want {
		cur, err := h.Sysctl(s.key)
		if err != nil {
			return err
		}
		if cur == s.value {
			continue
		}
		if err := h.setSysctl(s.key, s.value); err != nil {
			return err
		}
		log.Info(fmt.Sprintf("set %s=%s (was %s)", s.key, s.value, cur))
	}
	return nil
}
