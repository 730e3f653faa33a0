package killall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/host"
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

// isFlannelDevice recognises flannel's VXLAN devices, "flannel.<VNI>" and
// "flannel-v6.<VNI>" (pkg/backend/vxlan): the VNI is 1 unless the flannel
// config sets another.
func isFlannelDevice(name string) bool {
	for _, prefix := range []string{"flannel.", "flannel-v6."} {
		if vni, ok := strings.CutPrefix(name, prefix); ok && vni != "" && strings.Trim(vni, "0123456789") == "" {
			return true
		}
	}
	return false
}

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
	var veths, bridge, flannel []string
	for _, l := range links {
		switch {
		case strings.HasPrefix(l.Name, "veth") && l.Master == cniBridge:
			veths = append(veths, l.Name)
		case l.Name == cniBridge:
			bridge = append(bridge, l.Name)
		case isFlannelDevice(l.Name):
			flannel = append(flannel, l.Name)
		}
	}
	return slices.Concat(veths, bridge, flannel)
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
	if err := r.deleteServiceRoutes(ctx, rep); err != nil {
		errs = append(errs, err)
	}
	r.log.Info("deleted network links", "links", rep.LinksDeleted, "routes", rep.RoutesDeleted, "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// serviceRouteProto is the route protocol skiff marks its service-CIDR
// routes with (host.EnsureServiceRoutes, on hosts without a default route).
// Those routes go through the node IP's interface, not one of ours, so they
// outlive the links; the mark tells them from anyone else's routes.
var serviceRouteProto = strconv.Itoa(host.ServiceRouteProtocol)

// deleteServiceRoutes flushes skiff's service-CIDR routes, IPv4 and IPv6,
// and counts them. A host without IPv6 cannot list IPv6 routes: nothing of
// ours to remove there.
func (r *runner) deleteServiceRoutes(ctx context.Context, rep *Report) error {
	var errs []error
	for _, fam := range [][]string{{}, {"-6"}} {
		out, err := r.exec.Run(ctx, nil, "ip", slices.Concat(fam, []string{"route", "show", "proto", serviceRouteProto})...)
		if err != nil {
			r.log.Warn("cannot list routes, skipping", "family", fam, "err", err)
			continue
		}
		n := 0
		for line := range strings.Lines(string(out)) {
			if strings.TrimSpace(line) != "" {
				n++
			}
		}
		if n == 0 {
			continue
		}
		if _, err := r.exec.Run(ctx, nil, "ip", slices.Concat(fam, []string{"route", "flush", "proto", serviceRouteProto})...); err != nil {
			errs = append(errs, fmt.Errorf("deleting skiff's service routes (proto %s): %w", serviceRouteProto, err))
			continue
		}
		rep.RoutesDeleted += n
	}
	return errors.Join(errs...)
}
