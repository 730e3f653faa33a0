// Package probe checks a component's health endpoint over HTTPS.
package probe

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/skiffkube/skiff/internal/pki"
)

// Client is an HTTPS client for health probes. caFile verifies the server
// (empty: the server's certificate is not verified, which only loopback probes
// of self-signed component endpoints may use: nothing secret is sent); a client
// cert and key authenticate the probe when given.
func Client(caFile, certFile, keyFile string) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA for health probe: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", caFile)
		}
		tc.RootCAs = pool
	} else {
		tc.InsecureSkipVerify = true
	}
	if certFile != "" {
		// Reloaded when the files change (online renewal).
		cert, err := pki.NewKeyPairReloader(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading health probe client certificate: %w", err)
		}
		tc.GetClientCertificate = cert.GetClientCertificate
	}
	return &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true},
	}, nil
}

// Get returns nil when url answers 200 "ok"; otherwise an error with what it
// answered, so that a start-up timeout says why.
func Get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, lastLines(string(body), 5))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	var failing []string
	for _, l := range lines {
		if strings.Contains(l, "failed") {
			failing = append(failing, strings.TrimSpace(l))
		}
	}
	if len(failing) > 0 {
		lines = failing
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// Health checks a loopback component's /healthz on its secure port. Such
// components serve a self-signed certificate, and the probe sends nothing
// secret, so the certificate is not verified.
type Health struct {
	url    string
	client *http.Client
}

// NewHealth returns the probe for a component bound to bind:port. Port 0
// means the component serves nothing: only "running" can be checked.
func NewHealth(bind net.IP, port int) Health {
	if port == 0 {
		return Health{}
	}
	host := "127.0.0.1"
	if bind != nil && !bind.IsUnspecified() {
		host = bind.String()
	}
	// Without files to read, Client cannot fail.
	client, _ := Client("", "", "")
	return Health{url: "https://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/healthz", client: client}
}

// Check is a component's Ready: nil once it runs and, if it serves, answers.
func (h Health) Check(running bool) error {
	if !running {
		return errors.New("not running")
	}
	if h.url == "" {
		return nil
	}
	return Get(h.client, h.url)
}
