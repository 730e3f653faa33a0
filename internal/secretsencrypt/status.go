package secretsencrypt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"text/tabwriter"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status is what `skiff secrets-encrypt status` shows.
type Status struct {
	// Configured is false when the server has no encryption config.
	Configured bool  `json:"configured"`
	Enabled    bool  `json:"enabled"`
	Stage      Stage `json:"stage"`
	// Keys are the keys in order; the first is active (primary).
	Keys []KeyStatus `json:"keys,omitempty"`
	// Applied is true when the apiserver runs with the file's keys.
	Applied bool `json:"applied"`
	// Secrets counts the stored Secrets by the key they are stored with;
	// nil when the datastore could not be read (SecretsError says why).
	Secrets      *SecretCount `json:"secrets,omitempty"`
	SecretsError string       `json:"secretsError,omitempty"`
	// ReencryptError is why the last reencrypt stopped.
	ReencryptError string `json:"reencryptError,omitempty"`
}

// KeyStatus is one key, without its secret.
type KeyStatus struct {
	Active bool   `json:"active"`
	Type   string `json:"type"`
	Name   string `json:"name,omitempty"`
}

// SecretCount counts Secrets by the key their stored bytes name:
// "aescbc:<name>", "secretbox:<name>", or "identity" for plain text.
type SecretCount struct {
	Total int `json:"total"`
	// WithPrimary are those stored with the primary key.
	WithPrimary int            `json:"withPrimary"`
	ByKey       map[string]int `json:"byKey"`
}

// Label is how a key appears in SecretCount.ByKey.
func (k Key) Label() string {
	if k.Type == Identity {
		return Identity
	}
	return k.Type + ":" + k.Name
}

// storedWith is the label of the key a stored value was written with:
// the apiserver prefixes encrypted values with "k8s:enc:<type>:v1:<name>:".
func storedWith(v []byte) string {
	const prefix = "k8s:enc:"
	if !bytes.HasPrefix(v, []byte(prefix)) {
		return Identity
	}
	rest := v[len(prefix):]
	parts := strings.SplitN(string(rest[:min(len(rest), 512)]), ":", 4)
	if len(parts) < 4 {
		return "unknown"
	}
	return parts[0] + ":" + parts[2]
}

// Count classifies stored Secret values against primary.
func Count(values [][]byte, primary Key) SecretCount {
	c := SecretCount{ByKey: map[string]int{}}
	for _, v := range values {
		c.add(v, primary)
	}
	return c
}

func (c *SecretCount) add(v []byte, primary Key) {
	l := storedWith(v)
	c.Total++
	c.ByKey[l]++
	if l == primary.Label() {
		c.WithPrimary++
	}
}

// Status reads the keys, the stage and the stored Secrets.
func (c *Controller) Status(ctx context.Context) (*Status, error) {
	l := c.cfg.Layout
	k, err := Read(l)
	if errors.Is(err, fs.ErrNotExist) {
		return &Status{Stage: StageStart}, nil
	}
	if err != nil {
		return nil, err
	}
	s, err := ReadState(l)
	if err != nil {
		return nil, err
	}
	st := &Status{Configured: c.cfg.Configured, Enabled: k.Enabled(), Stage: s.Stage, ReencryptError: s.Error}
	for i, x := range k {
		st.Keys = append(st.Keys, KeyStatus{Active: i == 0, Type: x.Type, Name: x.Name})
	}
	if c.cfg.Configured {
		if st.Applied, err = c.applied(); err != nil {
			return nil, err
		}
	}
	n, err := c.countStored(ctx, k.Primary())
	if err != nil {
		st.SecretsError = err.Error()
	} else {
		st.Secrets = &n
	}
	return st, nil
}

// statusPageSize is how many Secrets status reads from the datastore at
// once: a Secret is up to about 1.5 MB stored (a Helm release's), so a
// page is bounded, where one read of every Secret is not.
const statusPageSize = 50

// countStored counts the stored Secrets by the key their bytes name,
// reading them in pages of statusPageSize at one revision (as the
// apiserver pages a list), keeping only the counts.
func (c *Controller) countStored(ctx context.Context, primary Key) (SecretCount, error) {
	n := SecretCount{ByKey: map[string]int{}}
	if c.cfg.Datastore == nil {
		return n, errors.New("no datastore client")
	}
	cli, err := c.cfg.Datastore()
	if err != nil {
		return n, err
	}
	defer cli.Close()
	prefix := strings.TrimSuffix(c.cfg.StoragePrefix, "/") + "/secrets/"
	end := clientv3.GetPrefixRangeEnd(prefix)
	key, rev := prefix, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(statusPageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, key, opts...)
		if err != nil {
			return n, fmt.Errorf("reading %s from the datastore: %w", prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			n.add(kv.Value, primary)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return n, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// typeNames are K3s's names of the key types in status.
var typeNames = map[string]string{AESCBC: "AES-CBC", Secretbox: "XSalsa20-POLY1305", Identity: "Identity"}

// Format writes st as text: K3s's first lines (encryption status, stage),
// whether the apiserver runs with the keys, the Secrets, then the keys.
func (st *Status) Format(w io.Writer) error {
	if !st.Configured && len(st.Keys) == 0 {
		_, err := fmt.Fprintln(w, "Encryption Status: Disabled, no configuration file found (start the server with --secrets-encryption)")
		return err
	}
	state := "Disabled"
	if st.Enabled {
		state = "Enabled"
	}
	fmt.Fprintf(w, "Encryption Status: %s\n", state)
	fmt.Fprintf(w, "Current Rotation Stage: %s\n", st.Stage)
	switch {
	case !st.Configured:
		fmt.Fprintln(w, "Server Keys: not in use (the server started without the encryption config: restart it)")
	case st.Applied:
		fmt.Fprintln(w, "Server Keys: the apiserver runs with these keys")
	default:
		fmt.Fprintln(w, "Server Keys: the apiserver has not loaded these keys yet")
	}
	switch {
	case st.Secrets == nil:
		fmt.Fprintf(w, "Secrets: unknown (%s)\n", st.SecretsError)
	case st.Secrets.Total == 0:
		fmt.Fprintln(w, "Secrets: none stored")
	case st.Secrets.WithPrimary == st.Secrets.Total:
		fmt.Fprintf(w, "Secrets: all %d stored with the active key\n", st.Secrets.Total)
	default:
		var by []string
		for l, n := range st.Secrets.ByKey {
			by = append(by, fmt.Sprintf("%d %s", n, l))
		}
		sort.Strings(by)
		fmt.Fprintf(w, "Secrets: %d of %d not stored with the active key (%s): run skiff secrets-encrypt reencrypt\n",
			st.Secrets.Total-st.Secrets.WithPrimary, st.Secrets.Total, strings.Join(by, ", "))
	}
	if st.ReencryptError != "" {
		fmt.Fprintf(w, "Last Reencrypt Error: %s\n", st.ReencryptError)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Active\tKey Type\tName")
	fmt.Fprintln(tw, "------\t--------\t----")
	for _, k := range st.Keys {
		active := ""
		if k.Active {
			active = " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", active, typeNames[k.Type], k.Name)
	}
	return tw.Flush()
}
