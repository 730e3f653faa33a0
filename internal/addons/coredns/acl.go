package coredns

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

// aclPlugin is skiff's source filter, first in the chain after bind. CoreDNS
// listens on the server's address, where more than pods may reach it; an
// open resolver there would answer (and amplify) anyone's queries. The stock
// acl plugin takes a fixed list, while the sources to allow include every
// node's address (a pod on another node reaches DNS masqueraded as its
// node), which changes as nodes join: so the list is kept from the API.
const aclPlugin = "skiffacl"

// activeACL is the filter of the CoreDNS instance being set up. CoreDNS's
// plugin registry is process-wide and its setup functions take no
// arguments of ours, so the one instance's filter is handed over here.
var activeACL atomic.Pointer[sourceACL]

func init() {
	plugin.Register(aclPlugin, func(c *caddy.Controller) error {
		acl := activeACL.Load()
		if acl == nil {
			return plugin.Error(aclPlugin, errors.New("no source filter configured"))
		}
		for c.Next() {
			if c.NextArg() {
				return plugin.Error(aclPlugin, c.ArgErr())
			}
		}
		dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
			return aclHandler{acl: acl, next: next}
		})
		return nil
	})
}

// sourceACL allows fixed prefixes (pods, Services, the host) and the
// addresses of the cluster's nodes.
type sourceACL struct {
	fixed []netip.Prefix

	mu     sync.Mutex
	byNode map[string][]netip.Addr
	nodes  atomic.Pointer[map[netip.Addr]bool]
}

func newSourceACL(fixed []netip.Prefix) *sourceACL {
	a := &sourceACL{fixed: fixed, byNode: map[string][]netip.Addr{}}
	a.nodes.Store(&map[netip.Addr]bool{})
	return a
}

func (a *sourceACL) allowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range a.fixed {
		if p.Contains(ip) {
			return true
		}
	}
	return (*a.nodes.Load())[ip]
}

// setNode records a node's addresses; nil forgets the node.
func (a *sourceACL) setNode(name string, n *corev1.Node) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n == nil {
		delete(a.byNode, name)
	} else {
		var addrs []netip.Addr
		for _, ad := range n.Status.Addresses {
			if ad.Type != corev1.NodeInternalIP && ad.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(ad.Address); err == nil {
				addrs = append(addrs, ip.Unmap())
			}
		}
		a.byNode[name] = addrs
	}
	all := map[netip.Addr]bool{}
	for _, addrs := range a.byNode {
		for _, ip := range addrs {
			all[ip] = true
		}
	}
	a.nodes.Store(&all)
}

type aclHandler struct {
	acl  *sourceACL
	next plugin.Handler
}

func (h aclHandler) Name() string { return aclPlugin }

func (h aclHandler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	ip, err := netip.ParseAddr(state.IP())
	if err != nil || !h.acl.allowed(ip) {
		m := new(dns.Msg).SetRcode(r, dns.RcodeRefused)
		w.WriteMsg(m)
		return dns.RcodeSuccess, nil
	}
	return plugin.NextOrFailure(h.Name(), h.next, ctx, w, r)
}
