package controlplane

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/skiffkube/skiff/internal/host"
)

func TestPorts(t *testing.T) {
	tests := []struct {
		name  string
		setup func(p *Plan)
		want  []string // "ip:port what"
	}{
		{name: "defaults", setup: func(*Plan) {}, want: []string{
			"127.0.0.1:6444 kube-apiserver on loopback", "127.0.0.1:10257 kube-controller-manager", "127.0.0.1:10259 kube-scheduler",
		}},
		{name: "overrides", setup: func(p *Plan) {
			p.Config.KubeAPIServerArgs = []string{"secure-port=7000"}
			p.Config.KubeControllerManagerArgs = []string{"secure-port=7001", "bind-address=0.0.0.0"}
			p.Config.KubeSchedulerArgs = []string{"--secure-port=7002"}
		}, want: []string{
			"127.0.0.1:7000 kube-apiserver on loopback", "0.0.0.0:7001 kube-controller-manager", "127.0.0.1:7002 kube-scheduler",
		}},
		{name: "disabled and serving off", setup: func(p *Plan) {
			p.Config.DisableControllerManager = true
			p.Config.KubeSchedulerArgs = []string{"secure-port=0"}
		}, want: []string{"127.0.0.1:6444 kube-apiserver on loopback"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testPlan(t, Layout{DataDir: t.TempDir()})
			tc.setup(&p)
			var got []string
			for _, u := range p.Ports() {
				got = append(got, net.JoinHostPort(u.IP, strconv.Itoa(u.Port))+" "+u.What)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// A taken scheduler port is refused in one line naming the port and the
// flag that moves it.
func TestTakenSchedulerPortNamesTheFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	p := testPlan(t, Layout{DataDir: t.TempDir()})
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	}
	p.Config.KubeAPIServerArgs = []string{"secure-port=" + free()}
	p.Config.KubeControllerManagerArgs = []string{"secure-port=" + free()}
	p.Config.KubeSchedulerArgs = []string{"secure-port=" + strconv.Itoa(port)}
	err = host.CheckPortsFree(p.Ports())
	if err == nil {
		t.Fatal("no error for a taken port")
	}
	for _, want := range []string{"port " + strconv.Itoa(port) + " (kube-scheduler)", "address already in use", "--kube-scheduler-arg=secure-port=N"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
