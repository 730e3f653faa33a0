package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/secretsencrypt"
)

// newSecretsEncryptCommand is `skiff secrets-encrypt`: K3s's tool for
// Secrets encryption at rest. The server does the work (it rewrites the
// key file, which its apiserver reloads, and the Secrets); this command
// asks it through the supervisor with the admin kubeconfig's certificate.
func newSecretsEncryptCommand() *cobra.Command {
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "secrets-encrypt",
		Short: "Show and change the encryption of Secrets at rest (status, enable, disable, key rotation)",
		Long: `Secrets encryption at rest, for a server started with --secrets-encryption.

A key rotation goes prepare (a new key, not used to write yet), rotate (the
new key writes), reencrypt (every Secret is rewritten with it, then the old
keys are dropped); rotate-keys does all of it at once. disable makes new
writes plain text and enable encrypts them again; a reencrypt then rewrites
the stored Secrets. The apiserver takes each change without a restart.
status shows the stage, the keys and how the stored Secrets are encrypted.

Changing keys is refused while a rotation is unfinished, on a cluster of
several servers, and on an external datastore (not supported yet).`,
		Args: cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "admin kubeconfig (default: $KUBECONFIG, then "+DefaultKubeconfig+")")

	var output string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether Secrets are encrypted, the rotation stage, the keys, and whether every Secret is stored with the active key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output: %q is not text or json", output)
			}
			body, err := encryptRequest(kubeconfig, http.MethodGet, "status", nil)
			if err != nil {
				return err
			}
			if output == "json" {
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var st secretsencrypt.Status
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("secrets-encrypt status: the server's answer: %w", err)
			}
			return st.Format(cmd.OutOrStdout())
		},
	}
	status.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	cmd.AddCommand(status)

	short := map[string]string{
		secretsencrypt.OpEnable:     "Encrypt new writes of Secrets again (then reencrypt)",
		secretsencrypt.OpDisable:    "Write Secrets in plain text from now on (then reencrypt to decrypt the stored ones)",
		secretsencrypt.OpPrepare:    "Add a new key that reads but does not write yet",
		secretsencrypt.OpRotate:     "Make the prepared key the one that writes",
		secretsencrypt.OpReencrypt:  "Rewrite every Secret with the active key, then drop the old keys",
		secretsencrypt.OpRotateKeys: "Add a new key, make it active, rewrite every Secret and drop the old keys",
	}
	for _, op := range secretsencrypt.Ops {
		var skip bool
		c := &cobra.Command{
			Use:   op,
			Short: short[op],
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				req, _ := json.Marshal(secretsencrypt.Request{Keep: skip})
				body, err := encryptRequest(kubeconfig, http.MethodPost, op, req)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(body)
				return err
			},
		}
		if op == secretsencrypt.OpReencrypt {
			c.Flags().BoolVar(&skip, "skip", false, "keep the old keys after the reencrypt")
		}
		cmd.AddCommand(c)
	}
	return cmd
}

// encryptRequest sends one secrets-encrypt request to the server the admin
// kubeconfig names and returns the answer's body; a refusal is its one
// line as the error.
func encryptRequest(kubeconfig, method, op string, body []byte) ([]byte, error) {
	path := kubeconfig
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path == "" {
		path = DefaultKubeconfig
		if v := os.Getenv(config.EnvName("write-kubeconfig")); v != "" {
			path = v
		}
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w (pass --kubeconfig)", path, err)
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	// enable, disable, prepare and rotate wait for the apiserver to load
	// the new keys.
	hc.Timeout = 2 * time.Minute
	req, err := http.NewRequest(method, strings.TrimSuffix(rc.Host, "/")+secretsencrypt.PathPrefix+op, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("secrets-encrypt %s: %w", op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("secrets-encrypt %s: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = resp.Status
		}
		return nil, errors.New(msg)
	}
	return b, nil
}
