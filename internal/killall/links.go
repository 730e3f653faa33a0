package killall

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Link is one network interface from `ip -o link show`.
type Link struct {
	Name   string
	Master string // the bridge it is enslaved to, if any
}

// Our links: the CNI bridge and flannel's VXLAN devices. Pod veths are
// recognised by being enslaved to the bridge, not by name alone, so that a
// Docker or libvirt veth survives.
const cniBridge = "cni0"

var ourDevices = []string{cniBridge, "flannel.1", "flannel-v6.1"}

// ParseIPLinks reads `ip -o link show`, one interface a line:
//
//	5: veth0a1b2c3d@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue master cni0 state UP ...
func ParseIPLinks(out string) []Link {
	var links []Link
	for line := range strings.Lines(out) {
		_, rest, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		name, attrs, ok := strings.Cut(rest, ": ")
		if !ok {
			continue
		}
		// "veth0a1b2c3d@if2": the part after @ names the peer.
		name, _, _ = strings.Cut(name, "@")
		l := Link{Name: name}
		f := strings.Fields(attrs)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "master" {
				l.Master = f[i+1]
				break
			}
		}
		links = append(links, l)
	}
	return links
}

// SelectLinks returns the links to delete: the bridge's veths first, then
// the bridge and flannel's devices, each only when present.
func SelectLinks(links []Link) []string {
	var veths, devices []string
	present := map[string]bool{}
	for _, l := range links {
		present[l.Name] = true
		if strings.HasPrefix(l.Name, "veth") && l.Master == cniBridge {
			veths = append(veths, l.Name)
		}
	}
	for _, d := range ourDevices {
		if present[d] {
			devices = append(devices, d)
		}
	}
	return append(veths, devices...)
}

func (r *runner) deleteLinks(ctx context.Context, rep *Report) error {
	start := time.Now()
	if _, err := r.exec.LookPath("ip"); err != nil {
		r.log.Warn("ip not found, not deleting network links", "err", err)
		return nil
	}
	out, err := r.exec.Run(ctx, nil, "ip", "-o", "link", "show")
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, name := range SelectLinks(ParseIPLinks(string(out))) {
		if _, err := r.exec.Run(ctx, nil, "ip", "link", "delete", name); err != nil {
			// A veth goes with its peer when the pod's namespace is freed,
			// which may happen between listing and deleting.
			if strings.Contains(err.Error(), "Cannot find device") {
				continue
			}
			errs = append(errs, fmt.Errorf("deleting link %s: %w", name, err))
			continue
		}
		rep.LinksDeleted++
		r.log.Debug("deleted link", "name", name)
	}
	r.log.Info("deleted network links", "links", rep.LinksDeleted, "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}
