// Package registries reads registries.yaml (K3s's format: mirrors with
// endpoints and rewrites, configs with auth and tls) and turns it into
// containerd's registry host configuration: one certs.d/<host>/hosts.toml per
// registry, credentials for the CRI plugin, and a loopback proxy per mirror
// endpoint that has rewrite rules (containerd has no rewrites of its own).
//
// The file is decoded strictly: an unknown key, a value of the wrong type, a
// bad endpoint or regular expression, or a TLS file that cannot be read is an
// error of one line naming the file and the key, found before anything is
// written.
package registries

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"go.yaml.in/yaml/v3"
)

// Registries is a decoded registries.yaml.
type Registries struct {
	// File is where it was read from, for messages.
	File string
	// Mirrors maps a registry host ("docker.io", "registry.example.com:5000",
	// or "*" for every registry) to where its images are pulled from.
	Mirrors map[string]Mirror
	// Configs maps a registry or endpoint host to its credentials and TLS.
	Configs map[string]Config
}

// Mirror is one mirrors.<host> entry.
type Mirror struct {
	// Endpoints are tried in order (URLs with scheme http or https), then the
	// registry itself.
	Endpoints []*url.URL
	// Rewrites map repository names when pulling through the endpoints,
	// sorted by pattern; the first that matches applies.
	Rewrites []Rewrite
}

// Rewrite is one rewrite rule: a Go regular expression over the repository
// name (without the registry host) and its replacement ($1 for groups).
type Rewrite struct {
	Pattern     string
	Re          *regexp.Regexp
	Replacement string
}

// Config is one configs.<host> entry.
type Config struct {
	Auth *Auth
	TLS  *TLS
}

// Auth is a registry's credentials, as K3s and containerd's CRI plugin take
// them: username and password, auth (base64 of "username:password"), or an
// identity token.
type Auth struct {
	Username      string
	Password      string
	Auth          string
	IdentityToken string
}

// TLS is how to talk TLS to a registry: files are PEM.
type TLS struct {
	CAFile             string
	CertFile           string
	KeyFile            string
	InsecureSkipVerify bool
}

// Load reads path. A file that does not exist is no configuration (nil, nil)
// when optional is true (the default path), an error naming the file
// otherwise.
func Load(path string, optional bool) (*Registries, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && optional {
		return nil, nil
	}
	if err != nil {
		// The file comes from --private-registry (or its default).
		return nil, fmt.Errorf("private-registry: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes registries.yaml's bytes; file names it in errors.
func Parse(file string, data []byte) (*Registries, error) {
	r := &Registries{File: file, Mirrors: map[string]Mirror{}, Configs: map[string]Config{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return r, nil // empty file
	}
	d := &decoder{file: file}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return r, nil
	}
	err := d.mapping(root, "", func(key string, v *yaml.Node, path string) error {
		switch key {
		case "mirrors":
			return d.mapping(v, path, func(host string, v *yaml.Node, path string) error {
				if err := checkHost(host, true); err != nil {
					return d.errorf(path, "%v", err)
				}
				m, err := d.mirror(v, path)
				if err != nil {
					return err
				}
				r.Mirrors[host] = m
				return nil
			})
		case "configs":
			return d.mapping(v, path, func(host string, v *yaml.Node, path string) error {
				if err := checkHost(host, false); err != nil {
					return d.errorf(path, "%v", err)
				}
				c, err := d.config(v, path)
				if err != nil {
					return err
				}
				r.Configs[host] = c
				return nil
			})
		}
		return d.errorf(path, "unknown key (want mirrors or configs)")
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

type decoder struct{ file string }

func (d *decoder) errorf(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", d.file, path, fmt.Sprintf(format, args...))
}

// join extends a key path: a key that is not a plain word is quoted, as in
// mirrors."docker.io".endpoint.
func join(path, key string) string {
	k := key
	if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(key) {
		k = strconv.Quote(key)
	}
	if path == "" {
		return k
	}
	return path + "." + k
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!null":
		return "null"
	case "!!str":
		return "a string"
	case "!!bool":
		return "a boolean"
	case "!!int", "!!float":
		return "a number"
	}
	return "a scalar"
}

func (d *decoder) mapping(n *yaml.Node, path string, each func(key string, v *yaml.Node, path string) error) error {
	if isNull(n) {
		return nil // a key with nothing under it, as after commenting its entries out
	}
	if n.Kind != yaml.MappingNode {
		if path == "" {
			return fmt.Errorf("%s: want a mapping with mirrors and configs, got %s", d.file, kindName(n))
		}
		return d.errorf(path, "want a mapping, got %s", kindName(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return d.errorf(join(path, "?"), "keys must be strings")
		}
		p := join(path, k.Value)
		if seen[k.Value] {
			return d.errorf(p, "key given twice")
		}
		seen[k.Value] = true
		if err := each(k.Value, v, p); err != nil {
			return err
		}
	}
	return nil
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func (d *decoder) str(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return "", d.errorf(path, "want a string, got %s", kindName(n))
	}
	return n.Value, nil
}

func (d *decoder) mirror(n *yaml.Node, path string) (Mirror, error) {
	var m Mirror
	err := d.mapping(n, path, func(key string, v *yaml.Node, path string) error {
		switch key {
		case "endpoint":
			if isNull(v) {
				return nil
			}
			if v.Kind != yaml.SequenceNode {
				return d.errorf(path, "want a list of URLs, got %s", kindName(v))
			}
			for i, e := range v.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				s, err := d.str(e, p)
				if err != nil {
					return err
				}
				u, err := url.Parse(s)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
					return d.errorf(p, "%q is not an http:// or https:// URL of a registry", s)
				}
				m.Endpoints = append(m.Endpoints, u)
			}
			return nil
		case "rewrite":
			return d.mapping(v, path, func(pattern string, v *yaml.Node, path string) error {
				repl, err := d.str(v, path)
				if err != nil {
					return err
				}
				re, err := regexp.Compile(pattern)
				if err != nil {
					return d.errorf(path, "invalid regular expression: %v", err)
				}
				m.Rewrites = append(m.Rewrites, Rewrite{Pattern: pattern, Re: re, Replacement: repl})
				return nil
			})
		}
		return d.errorf(path, "unknown key (want endpoint or rewrite)")
	})
	sort.Slice(m.Rewrites, func(i, j int) bool { return m.Rewrites[i].Pattern < m.Rewrites[j].Pattern })
	return m, err
}

func (d *decoder) config(n *yaml.Node, path string) (Config, error) {
	var c Config
	err := d.mapping(n, path, func(key string, v *yaml.Node, path string) error {
		switch key {
		case "auth":
			c.Auth = &Auth{}
			return d.mapping(v, path, func(key string, v *yaml.Node, path string) error {
				dst := map[string]*string{"username": &c.Auth.Username, "password": &c.Auth.Password, "auth": &c.Auth.Auth, "identitytoken": &c.Auth.IdentityToken}[key]
				if dst == nil {
					return d.errorf(path, "unknown key (want username, password, auth or identitytoken)")
				}
				s, err := d.str(v, path)
				*dst = s
				return err
			})
		case "tls":
			c.TLS = &TLS{}
			err := d.mapping(v, path, func(key string, v *yaml.Node, path string) error {
				if key == "insecure_skip_verify" {
					if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
						return d.errorf(path, "want true or false, got %s", kindName(v))
					}
					c.TLS.InsecureSkipVerify = v.Value == "true" || v.Value == "True" || v.Value == "TRUE"
					return nil
				}
				dst := map[string]*string{"ca_file": &c.TLS.CAFile, "cert_file": &c.TLS.CertFile, "key_file": &c.TLS.KeyFile}[key]
				if dst == nil {
					return d.errorf(path, "unknown key (want ca_file, cert_file, key_file or insecure_skip_verify)")
				}
				s, err := d.str(v, path)
				if err != nil {
					return err
				}
				if !strings.HasPrefix(s, "/") {
					return d.errorf(path, "%q: want an absolute path", s)
				}
				data, err := os.ReadFile(s)
				if err != nil {
					return d.errorf(path, "%v", err)
				}
				if key == "ca_file" && !x509.NewCertPool().AppendCertsFromPEM(data) {
					return d.errorf(path, "%s holds no PEM certificate", s)
				}
				*dst = s
				return nil
			})
			if err != nil {
				return err
			}
			if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
				return d.errorf(path, "cert_file and key_file go together")
			}
			if c.TLS.CertFile != "" {
				if _, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
					return d.errorf(join(path, "cert_file"), "%v", err)
				}
			}
			return nil
		}
		return d.errorf(path, "unknown key (want auth or tls)")
	})
	return c, err
}

// registryHost is a registry host as image references name one:
// distribution/reference's domain (a DNS name of letters, digits, hyphens
// and dots, or an IPv4 address, or an IPv6 address in brackets) with an
// optional :port, anchored. It keeps "." and ".." out: a mirror's host is
// a directory name under containerd's certs.d.
var registryHost = regexp.MustCompile(`^(?:` + reference.DomainRegexp.String() + `)$`)

// checkHost accepts a registry host as image references name one (host or
// host:port, no scheme or path); wildcard allows "*".
func checkHost(h string, wildcard bool) error {
	if h == "*" {
		if wildcard {
			return nil
		}
		return errors.New(`"*" is for mirrors only; name the registry host`)
	}
	if !registryHost.MatchString(h) {
		return fmt.Errorf("%q is not a registry host like registry.example.com:5000 (no scheme, no path)", h)
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		if host == "" {
			return fmt.Errorf("%q: no host before the port", h)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%q: invalid port", h)
		}
	}
	return nil
}

// quote is a TOML basic string.
func quote(s string) string {
	var b bytes.Buffer
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
