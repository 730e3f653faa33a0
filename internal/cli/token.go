package cli

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffkube/skiff/internal/bootstraptoken"
	"github.com/skiffkube/skiff/internal/config"
	"github.com/skiffkube/skiff/internal/token"
)

// newTokenCommand is `skiff token`: join tokens for agents, stored as bootstrap
// token Secrets so that they expire and can be listed and revoked.
func newTokenCommand() *cobra.Command {
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and delete tokens that agents join with; rotate the server token",
		Args:  cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "admin kubeconfig (default: $KUBECONFIG, then "+DefaultKubeconfig+")")

	var ttl time.Duration
	var description string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, caPEM, err := tokenClient(kubeconfig)
			if err != nil {
				return err
			}
			secret, err := bootstraptoken.Create(cmd.Context(), c, ttl, description, time.Now())
			if err != nil {
				return err
			}
			// The full form pins the server CA, as the cluster token does.
			t := token.Token{CAHash: token.HashCA(caPEM), Username: "node", Secret: secret}
			fmt.Fprintln(cmd.OutOrStdout(), t.String())
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid; 0 for ever")
	create.Flags().StringVar(&description, "description", "", "what the token is for")

	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (without their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := tokenClient(kubeconfig)
			if err != nil {
				return err
			}
			infos, err := bootstraptoken.List(cmd.Context(), c)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tEXPIRES\tDESCRIPTION")
			for _, i := range infos {
				exp := "never"
				if !i.Expires.IsZero() {
					exp = i.Expires.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", i.ID, exp, i.Description)
			}
			return w.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete ID...",
		Short: "Delete join tokens by ID (or by the whole token)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := tokenClient(kubeconfig)
			if err != nil {
				return err
			}
			for _, a := range args {
				if t, err := token.Parse(a); err == nil {
					a = t.Secret
				}
				if err := bootstraptoken.Delete(cmd.Context(), c, a); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "deleted")
			}
			return nil
		},
	}
	cmd.AddCommand(create, list, del, newTokenRotateCommand())
	return cmd
}

// tokenClient connects with the admin kubeconfig and returns the server CA it
// trusts, which the printed token pins.
func tokenClient(path string) (kubernetes.Interface, []byte, error) {
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
		return nil, nil, fmt.Errorf("kubeconfig %s: %w (pass --kubeconfig)", path, err)
	}
	if len(rc.TLSClientConfig.CAData) == 0 {
		return nil, nil, fmt.Errorf("kubeconfig %s embeds no server CA: use the admin kubeconfig skiff server writes", path)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return c, rc.TLSClientConfig.CAData, nil
}
