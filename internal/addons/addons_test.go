package addons

import (
	"context"
	"slices"
	"testing"

	"github.com/skiffkube/skiff/internal/component"
	"github.com/skiffkube/skiff/internal/config"
)

type named string

func (n named) Name() string                { return string(n) }
func (n named) Init(context.Context) error  { return nil }
func (n named) Start(context.Context) error { return nil }
func (n named) Ready() error                { return nil }
func (n named) Stop() error                 { return nil }

func one(name string) func(*Env) []component.Component {
	return func(*Env) []component.Component { return []component.Component{named(name)} }
}

func names(cs []component.Component) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name())
	}
	return out
}

func testList() []Addon {
	return []Addon{
		{Name: "dns", Manifest: &Manifest{File: "dns.yaml", Bytes: func(*Env) []byte { return []byte("dns") }},
			Components: one("dns-server"), Ports: func(*Env) []Port { return []Port{{Port: 53, What: "dns"}} },
			Serves: func(*Env) []Service { return []Service{{Namespace: "kube-system", Name: "kube-dns"}} }},
		{Name: "lb", Placement: OneElectedServer, Components: one("lb-controller"), Cleanup: one("lb-cleanup")},
		{Name: "storage", Manifest: &Manifest{File: "storage.yaml", Bytes: func(*Env) []byte { return []byte("sc") }},
			Placement: OneElectedServer, Components: one("provisioner")},
		{Name: "roles", Placement: EveryNode, Components: one("labeler")},
		{Name: "files", Disabled: func(*config.Server) bool { return false }, Components: func(e *Env) []component.Component {
			// Built after every manifest is known.
			return []component.Component{named("manifests:" + string(rune('0'+len(e.Files))) + "/" + string(rune('0'+len(e.Removed))))}
		}},
	}
}

func TestAssemble(t *testing.T) {
	env := &Env{Config: &config.Server{Disable: []string{"storage", "lb"}}, Server: "s1", LocalNode: "s1", Log: quiet}
	got, err := Assemble(testList(), env, []Port{{Port: 6443, What: "supervisor"}}, DefaultElection)
	if err != nil {
		t.Fatal(err)
	}
	if string(env.Files["dns.yaml"]) != "dns" || len(env.Files) != 1 || !slices.Equal(env.Removed, []string{"storage.yaml"}) {
		t.Errorf("files %v, removed %v", env.Files, env.Removed)
	}
	if len(env.Ports) != 2 || env.Ports[1].Port != 53 {
		t.Errorf("ports %+v", env.Ports)
	}
	want := []string{"dns-server", "lb-cleanup", "manifests:1/1", "server-endpoints", "server-endpoints"}
	if !slices.Equal(names(got.Server), want) {
		t.Errorf("server components %v, want %v", names(got.Server), want)
	}
	if _, ok := got.Server[4].(*Elected); !ok {
		t.Errorf("the endpoint reaper is not elected: %T", got.Server[4])
	}
	if ep, ok := got.Server[3].(*Endpoints); !ok || len(ep.cfg.Services) != 1 || ep.cfg.Services[0].Name != "kube-dns" {
		t.Errorf("endpoint publication %+v", got.Server[3])
	}
	if !slices.Equal(names(got.Node), []string{"labeler"}) {
		t.Errorf("node components %v", names(got.Node))
	}

	// Enabled, an elected add-on is wrapped; without a node, every-node
	// add-ons have nowhere to run.
	env = &Env{Config: &config.Server{}, Server: "s1", Log: quiet}
	got, err = Assemble(testList(), env, nil, DefaultElection)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := got.Server[1].(*Elected); !ok || e.Name() != "lb" {
		t.Errorf("lb is %T %v, want elected", got.Server[1], got.Server[1].Name())
	}
	if got.Node != nil {
		t.Errorf("node components without a node: %v", names(got.Node))
	}
}

func TestAssembleRefusesDuplicates(t *testing.T) {
	list := append(testList(), Addon{Name: "dns"})
	if _, err := Assemble(list, &Env{Config: &config.Server{}, Log: quiet}, nil, DefaultElection); err == nil {
		t.Error("duplicate add-on name accepted")
	}
}
