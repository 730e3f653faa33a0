// Package cli holds skiff's commands and maps their flags onto the typed
// configuration.
package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	k8sversion "k8s.io/component-base/version"

	"github.com/skiffkube/skiff/internal/version"
)

// NewRoot returns the `skiff` command with every subcommand.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "skiff",
		Short:         "A lightweight Kubernetes distribution in one binary",
		Long:          "skiff runs a conformant Kubernetes cluster from one binary.\n\nStart a server with `skiff server`; talk to it with `skiff kubectl`.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	// Declared by us before cobra merges the process-global flag set, where
	// an embedded Kubernetes package registers a --version of its own kind.
	showVersion := root.PersistentFlags().Bool("version", false, "print the skiff and Kubernetes versions")
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if *showVersion {
			PrintVersion(cmd.OutOrStdout())
			return nil
		}
		return cmd.Help()
	}
	root.AddCommand(newToolCommands()...)
	root.AddCommand(newCheckConfigCommand(), newKillallCommand(), newTokenCommand(), newEtcdSnapshotCommand())
	root.AddCommand(newCertificateCommand())
	root.AddCommand(newSecretsEncryptCommand())
	root.AddCommand(newServerCommand(), newAgentCommand(), newKubectlCommand(), &cobra.Command{
		Use:   "version",
		Short: "Print the skiff and Kubernetes versions",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { PrintVersion(cmd.OutOrStdout()) },
	})
	root.CompletionOptions.HiddenDefaultCmd = true
	return root
}

func versionText() string {
	return fmt.Sprintf("skiff version %s (%s)\nkubernetes %s\n", version.Version, version.GitCommit, k8sversion.Get().GitVersion)
}

// PrintVersion writes the version text of --version and `skiff version`.
func PrintVersion(w io.Writer) { fmt.Fprint(w, versionText()) }
