package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffkube/skiff/internal/certs"
	"github.com/skiffkube/skiff/internal/killall"
)

// newCertificateCommand is `skiff certificate check|rotate`, K3s's names:
// the certificates skiff manages in a data dir, whether or not it runs.
func newCertificateCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "certificate",
		Short: "Check and rotate the certificates skiff manages on this machine",
		Args:  cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVarP(&dataDir, "data-dir", "d", killall.DefaultDataDir, "the server's or agent's data dir (default: the server's setting, /var/lib/skiff)")
	resolve := func(c *cobra.Command) (string, error) {
		return killallDataDir(c.Flags().Lookup("data-dir").Changed, dataDir)
	}

	var output string
	check := &cobra.Command{
		Use:   "check",
		Short: "List every certificate with its subject, SANs, issuer, expiry and status (ok, warning under 30 days, expired)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: must be table or json", output)
			}
			dir, err := resolve(c)
			if err != nil {
				return err
			}
			infos, err := certs.Check(dir, time.Now())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(infos)
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "FILE\tSERVICE\tSUBJECT\tISSUER\tNOT AFTER\tDAYS LEFT\tSTATUS\tSANS")
			for _, i := range infos {
				svc := i.Service
				if i.CA {
					svc = "(CA)"
				}
				rel, err := filepath.Rel(dir, i.File)
				if err != nil {
					rel = i.File
				}
				if i.Error != "" {
					fmt.Fprintf(w, "%s\t%s\t\t\t\t\t%s: %s\t\n", rel, svc, i.Status, i.Error)
					continue
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", rel, svc, i.Subject, i.Issuer,
					i.NotAfter.Format(time.RFC3339), i.DaysLeft, i.Status, strings.Join(i.SANs, ","))
			}
			return w.Flush()
		},
	}
	check.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	var services []string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Re-issue leaf certificates now (never the CAs), whether or not the server runs",
		Long: `Re-issue leaf certificates now, each signed by its CA with its own subject,
SANs and key; a running server's components pick up the new files without a
restart. Without --service every leaf is re-issued. Services: ` + strings.Join(certs.Services, ", ") + `.
An agent's certificates are issued by the server: a running agent renews
them itself, and a restart fetches new ones.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, err := resolve(c)
			if err != nil {
				return err
			}
			done, err := certs.Rotate(dir, services, time.Now())
			for _, r := range done {
				fmt.Fprintf(c.OutOrStdout(), "re-issued %s (%s), valid until %s\n", r.Entry.Cert, r.Entry.Service, r.NotAfter.UTC().Format(time.RFC3339))
			}
			return err
		},
	}
	rotate.Flags().StringSliceVar(&services, "service", nil, "services whose certificates to re-issue, comma-separated or repeated: "+strings.Join(certs.Services, ", "))
	cmd.AddCommand(check, rotate)
	return cmd
}
