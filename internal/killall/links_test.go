package killall

import (
	"context"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/skiffkube/skiff/internal/host"
)

const sampleIPLinks = `1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP mode DEFAULT group default qlen 1000\    link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff
3: docker0: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN mode DEFAULT group default \    link/ether 02:42:ac:11:00:01 brd ff:ff:ff:ff:ff:ff
4: flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT group default \    link/ether 6e:1c:aa:bb:cc:dd brd ff:ff:ff:ff:ff:ff
5: cni0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 8a:2b:00:11:22:33 brd ff:ff:ff:ff:ff:ff
6: veth3f1c2a4b@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue master cni0 state UP mode DEFAULT group default \    link/ether 1a:2b:3c:4d:5e:6f brd ff:ff:ff:ff:ff:ff link-netns cni-1b2c3d4e-0000-1111-2222-333344445555
7: vethd00c3e1@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master docker0 state UP mode DEFAULT group default \    link/ether aa:bb:cc:dd:ee:ff brd ff:ff:ff:ff:ff:ff link-netnsid 1
8: veth9a8b7c6d@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue master cni0 state UP mode DEFAULT group default \    link/ether 1a:2b:3c:4d:5e:70 brd ff:ff:ff:ff:ff:ff link-netns cni-2
`

func TestParseIPLinks(t *testing.T) {
	got := ParseIPLinks(sampleIPLinks)
	want := []Link{
		{Name: "lo"}, {Name: "eth0"}, {Name: "docker0"}, {Name: "flannel.1"}, {Name: "cni0"},
		{Name: "veth3f1c2a4b", Master: "cni0"}, {Name: "vethd00c3e1", Master: "docker0"}, {Name: "veth9a8b7c6d", Master: "cni0"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseIPLinks =\n%+v\nwant\n%+v", got, want)
	}
}

func TestSelectLinks(t *testing.T) {
	got := SelectLinks(ParseIPLinks(sampleIPLinks))
	// Docker's veth stays; veths go before their bridge.
	want := []string{"veth3f1c2a4b", "veth9a8b7c6d", "cni0", "flannel.1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SelectLinks = %v, want %v", got, want)
	}
	// Any VNI, IPv6 too; the bridge's veths before the bridge.
	got = SelectLinks([]Link{{Name: "flannel-v6.7"}, {Name: "flannel.7"}, {Name: "cni0"}, {Name: "veth1", Master: "cni0"}, {Name: "flannel0"}})
	if want := []string{"veth1", "cni0", "flannel-v6.7", "flannel.7"}; !reflect.DeepEqual(got, want) {
		t.Errorf("SelectLinks = %v, want %v", got, want)
	}
	if got := SelectLinks([]Link{{Name: "eth0"}}); len(got) != 0 {
		t.Errorf("SelectLinks on a clean host = %v, want none", got)
	}
}

// killall removes the service routes of both families, and only routes of
// skiff's protocol: flush names the protocol, never a destination.
func TestDeleteServiceRoutes(t *testing.T) {
	h := newFakeHost(t)
	h.installed["ip"] = true
	h.outputs["ip route show proto 165"] = "10.43.0.0/16 dev eth0 proto 165 scope link src 192.168.5.7 \n"
	h.outputs["ip -6 route show proto 165"] = "fd00:43::/112 dev eth0 proto 165 metric 1024 pref medium\n"
	var rep Report
	if err := h.runner(t, 99).deleteLinks(context.Background(), &rep); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ip -o link show",
		"ip route show proto 165", "ip route flush proto 165",
		"ip -6 route show proto 165", "ip -6 route flush proto 165",
	}
	if !slices.Equal(h.calls, want) || rep.RoutesDeleted != 2 {
		t.Errorf("commands %v (%d routes), want %v (2)", h.calls, rep.RoutesDeleted, want)
	}
	if serviceRouteProto != strconv.Itoa(host.ServiceRouteProtocol) || serviceRouteProto != "165" {
		t.Errorf("route protocol %s, the node marks its routes with %d", serviceRouteProto, host.ServiceRouteProtocol)
	}
}
