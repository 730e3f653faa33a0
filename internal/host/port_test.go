package host

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// A port something holds is refused in one line naming the port, what needs
// it and the hint; a free one passes; UDP ports are checked as UDP.
func TestCheckPortsFree(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcpPort := tcp.Addr().(*net.TCPAddr).Port
	udpPort := udp.LocalAddr().(*net.UDPAddr).Port

	if err := CheckPortsFree([]PortUse{{Port: freeTCPPort(t), What: "x"}}); err != nil {
		t.Errorf("free port refused: %v", err)
	}
	err = CheckPortsFree([]PortUse{{Port: freeTCPPort(t), What: "x"}, {Port: tcpPort, What: "kube-scheduler", Hint: "; move it with --kube-scheduler-arg=secure-port=N"}})
	want := fmt.Sprintf("port %d (kube-scheduler) is not available: address already in use; move it with --kube-scheduler-arg=secure-port=N", tcpPort)
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	// Held on loopback, wanted on all addresses: still taken.
	if err := CheckPortsFree([]PortUse{{IP: "0.0.0.0", Port: tcpPort, What: "kubelet API"}}); err == nil {
		t.Error("port held on loopback not found when checking all addresses")
	}
	err = CheckPortsFree([]PortUse{{Network: "udp", Port: udpPort, What: "cluster DNS", Hint: "; or --disable coredns"}})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("port %d/udp (cluster DNS)", udpPort)) || !strings.HasSuffix(err.Error(), "--disable coredns") {
		t.Errorf("taken UDP port: got %v", err)
	}
	if err := CheckPortFree(tcpPort, "kube-apiserver", "; hint"); err == nil || !strings.HasSuffix(err.Error(), "; hint") {
		t.Errorf("CheckPortFree: got %v", err)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestServiceRoute(t *testing.T) {
	r := ServiceRoute(netip.MustParsePrefix("10.43.0.0/16"), netip.MustParseAddr("192.168.5.7"), 3)
	if r.Dst.String() != "10.43.0.0/16" || !r.Src.Equal(net.ParseIP("192.168.5.7")) || r.LinkIndex != 3 || r.Protocol != ServiceRouteProtocol {
		t.Errorf("v4 route: %+v", r)
	}
	r = ServiceRoute(netip.MustParsePrefix("fd00:43::/112"), netip.MustParseAddr("fd00::7"), 4)
	if r.Dst.String() != "fd00:43::/112" || r.LinkIndex != 4 {
		t.Errorf("v6 route: %+v", r)
	}
}
