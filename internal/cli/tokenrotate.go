package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiffkube/skiff/internal/agent/joinclient"
	"github.com/skiffkube/skiff/internal/controlplane"
	"github.com/skiffkube/skiff/internal/token"
	"github.com/skiffkube/skiff/internal/tokenrotate"
)

// newTokenRotateCommand is `skiff token rotate`: replace the server token
// of a running server (K3s's `k3s token rotate`).
func newTokenRotateCommand() *cobra.Command {
	var current, newToken, server, dataDir string
	cmd := &cobra.Command{
		Use:   "rotate --new-token TOKEN",
		Short: "Replace the server token; joined nodes keep working, new joins need the new token",
		Long: `Replace the server token of the running server at --server with --new-token
(a bare secret, or a full SK10... token of this cluster's CA).

The request is authenticated with the current server token: --token, else the
one in <data-dir>/server/token. From then on that server refuses the old token
and joins nodes with the new one; nodes that joined keep working, also across
restarts, since they come back with their own certificates. On an external
datastore the cluster's bootstrap data is sealed again with the new token.

Afterwards update --token (or --token-file) of every server to the new token. A
server whose --token still says the old one starts on the new one it stores,
with a warning. With several servers, run the command on each of them, or
(external datastore) restart each with the new --token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// A new token that does not parse changes nothing: refused
			// before any connection.
			if _, err := tokenrotate.ParseNewToken(newToken); err != nil {
				return err
			}
			l := controlplane.Layout{DataDir: dataDir}
			cur, err := currentToken(current, l)
			if err != nil {
				return err
			}
			caPEM, err := serverCA(cmd, server, cur, l)
			if err != nil {
				return err
			}
			resp, err := tokenrotate.Rotate(cmd.Context(), server, caPEM, cur, newToken)
			if err != nil {
				return err
			}
			if !resp.Changed {
				fmt.Fprintln(cmd.ErrOrStderr(), "the server token is the new token already: nothing changed")
			} else {
				fmt.Fprintln(cmd.ErrOrStderr(), "server token rotated; update --token (or --token-file) of every server to the new token, printed below")
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.Token)
			return nil
		},
	}
	cmd.Flags().StringVarP(&current, "token", "t", "", "the current server token (default: <data-dir>/server/token)")
	cmd.Flags().StringVar(&newToken, "new-token", "", "the new server token: a secret, or SK10<CA hash>::server:<secret>")
	cmd.Flags().StringVarP(&server, "server", "s", "https://127.0.0.1:6443", "the server whose token to rotate")
	cmd.Flags().StringVarP(&dataDir, "data-dir", "d", "/var/lib/skiff", "the server's data dir, for its current token and CA")
	_ = cmd.MarkFlagRequired("new-token")
	return cmd
}

// currentToken is --token when given, else the data dir's stored token.
func currentToken(flag string, l controlplane.Layout) (token.Token, error) {
	if flag != "" {
		t, err := token.Parse(flag)
		if err != nil {
			return token.Token{}, fmt.Errorf("--token: %w", err)
		}
		return t, nil
	}
	data, err := os.ReadFile(l.TokenFile())
	if err != nil {
		return token.Token{}, fmt.Errorf("no --token given, and the server's token cannot be read: %w (pass --token, or --data-dir)", err)
	}
	t, err := token.Parse(string(data))
	if err != nil {
		return token.Token{}, fmt.Errorf("stored token %s: %w", l.TokenFile(), err)
	}
	return t, nil
}

// serverCA is the CA the server at serverURL must present: the one the
// current token pins (fetched and checked), else the data dir's.
func serverCA(cmd *cobra.Command, serverURL string, cur token.Token, l controlplane.Layout) ([]byte, error) {
	if !cur.IsShort() {
		caPEM, _, err := joinclient.FetchCA(cmd.Context(), serverURL, cur)
		return caPEM, err
	}
	caPEM, err := os.ReadFile(l.ServerCA().Cert)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("--token has no CA hash and %s does not exist: give the full token (SK10...) or --data-dir", l.ServerCA().Cert)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the server CA: %w", err)
	}
	if !strings.Contains(string(caPEM), "CERTIFICATE") {
		return nil, fmt.Errorf("%s holds no certificate", l.ServerCA().Cert)
	}
	return caPEM, nil
}
