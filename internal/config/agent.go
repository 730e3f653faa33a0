package config

import (
	"fmt"
	"net/url"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/skiffkube/skiff/internal/token"
)

// Agent is the configuration of `skiff agent`: a node that joins a server.
type Agent struct {
	DataDir   string `json:"data-dir"`
	Server    string `json:"server"`
	Token     string `json:"token"`
	TokenFile string `json:"token-file"`
	LBPort    int    `json:"lb-server-port"`
	Debug     bool   `json:"debug"`
	LogLevel  int    `json:"v"`

	Node
}

// AddFlags registers every Agent option on fs with its default.
func (a *Agent) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&a.DataDir, "data-dir", "d", "/var/lib/skiff", "directory that holds the node's state")
	fs.StringVarP(&a.Server, "server", "s", "", "URL of a server to join, like https://10.0.0.1:6443 (also SKIFF_URL)")
	fs.StringVarP(&a.Token, "token", "t", "", "token to join with: the server's token, its --agent-token, or one from `skiff token create`")
	fs.StringVar(&a.TokenFile, "token-file", "", "file that holds the token")
	fs.IntVar(&a.LBPort, "lb-server-port", 6444, "loopback port of the agent's load balancer over every server, which the kubelet and kube-proxy use")
	fs.BoolVar(&a.Debug, "debug", false, "turn on debug logs")
	fs.IntVarP(&a.LogLevel, "v", "v", 0, "log verbosity (klog level)")
	a.Node.AddFlags(fs)
}

// Complete puts values into canonical form.
func (a *Agent) Complete() error {
	if a.DataDir != "" {
		abs, err := filepath.Abs(a.DataDir)
		if err != nil {
			return fmt.Errorf("data-dir: making %q absolute: %w", a.DataDir, err)
		}
		a.DataDir = abs
	}
	a.Node.Complete()
	return nil
}

// Validate returns every problem with a, each naming its flag.
func (a *Agent) Validate() []error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if a.DataDir == "" || !filepath.IsAbs(a.DataDir) {
		add(fieldError("data-dir", "must be an absolute path, got %q", a.DataDir))
	}
	if a.Server == "" {
		add(fieldError("server", "required: the URL of a server to join (or SKIFF_URL)"))
	} else if u, err := url.Parse(a.Server); err != nil || u.Scheme != "https" || u.Host == "" {
		add(fieldError("server", "%q is not an https URL like https://10.0.0.1:6443", a.Server))
	}
	switch {
	case a.Token == "" && a.TokenFile == "":
		add(fieldError("token", "required: the token from the server (or --token-file)"))
	case a.Token != "" && a.TokenFile != "":
		add(fieldError("token", "token and token-file are mutually exclusive; set one"))
	case a.Token != "":
		if _, err := token.Parse(a.Token); err != nil {
			add(fieldError("token", "%v", err))
		}
	}
	if a.LBPort < 1 || a.LBPort > 65535 {
		add(fieldError("lb-server-port", "must be between 1 and 65535, got %d", a.LBPort))
	}
	if a.LogLevel < 0 {
		add(fieldError("v", "must be 0 or more, got %d", a.LogLevel))
	}
	return append(errs, a.Node.Validate()...)
}
