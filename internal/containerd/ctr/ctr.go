// Package ctr is skiff's `ctr` personality, preset for the node's containerd socket
// and the Kubernetes namespace.
package ctr

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/ctr/app"
)

// Main runs ctr with args (args[0] is the program name) against socket unless the
// user chose another address, and returns the exit code.
func Main(args []string, socket string) int {
	if os.Getenv("CONTAINERD_ADDRESS") == "" {
		os.Setenv("CONTAINERD_ADDRESS", socket)
	}
	if os.Getenv("CONTAINERD_NAMESPACE") == "" {
		os.Setenv("CONTAINERD_NAMESPACE", "k8s.io")
	}
	if err := app.New().Run(context.Background(), args); err != nil {
		fmt.Fprintln(os.Stderr, "ctr:", err)
		return 1
	}
	return 0
}
