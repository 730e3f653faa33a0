package host

import (
	"fmt"
	"strconv"
	"strings"

	utilsysctl "k8s.io/component-helpers/node/util/sysctl"
)

// KernelDefault is one kernel setting the kubelet checks with
// protectKernelDefaults (and otherwise writes itself).
type KernelDefault struct {
	Key   string // dotted sysctl name, vm.overcommit_memory
	Value int
}

// KernelDefaults are the sysctls and values the kubelet's container manager
// wants (k8s.io/kubernetes/pkg/kubelet/cm setupKernelTunables), in a fixed
// order so that the first differing one is always the same.
var KernelDefaults = []KernelDefault{
	{dotted(utilsysctl.VMOvercommitMemory), utilsysctl.VMOvercommitMemoryAlways},
	{dotted(utilsysctl.VMPanicOnOOM), utilsysctl.VMPanicOnOOMInvokeOOMKiller},
	{dotted(utilsysctl.KernelPanic), utilsysctl.KernelPanicRebootTimeout},
	{dotted(utilsysctl.KernelPanicOnOops), utilsysctl.KernelPanicOnOopsAlways},
	{dotted(utilsysctl.RootMaxKeys), utilsysctl.RootMaxKeysSetting},
	{dotted(utilsysctl.RootMaxBytes), utilsysctl.RootMaxBytesSetting},
}

// dotted turns upstream's /proc/sys path (kernel/panic) into sysctl's name
// (kernel.panic).
func dotted(path string) string { return strings.ReplaceAll(path, "/", ".") }

// CheckKernelDefaults is --protect-kernel-defaults' check, made before
// anything is written: the kubelet with protectKernelDefaults=true refuses
// to start when one of KernelDefaults differs, and skiff refuses earlier
// with one line naming the first differing sysctl, its value and the value
// needed (as a sysctl -w command). A sysctl that cannot be read is an error
// naming it.
func (h Host) CheckKernelDefaults() error {
	for _, d := range KernelDefaults {
		cur, err := h.Sysctl(d.Key)
		if err != nil {
			return fmt.Errorf("protect-kernel-defaults: %w", err)
		}
		if v, err := strconv.Atoi(cur); err == nil && v == d.Value {
			continue
		}
		return fmt.Errorf("protect-kernel-defaults: kernel setting %s is %s, the kubelet needs %d: run sysctl -w %s=%d (and persist it in /etc/sysctl.d), or start without --protect-kernel-defaults to let the kubelet set it",
			d.Key, cur, d.Value, d.Key, d.Value)
	}
	return nil
}

// CheckKernelDefaults is Host{}.CheckKernelDefaults.
func CheckKernelDefaults() error { return Host{}.CheckKernelDefaults() }
