// Command skiff is a Kubernetes distribution in one binary. Invoked through a
// symlink named after a bundled tool (kubectl, ctr, crictl) or as containerd,, it runs that tool.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/skiffkube/skiff/internal/cli"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "kubectl":
		os.Exit(cli.RunKubectl(os.Args[1:]))
	case "containerd":
		os.Exit(cli.RunContainerd(os.Args[1:]))
	case "ctr":
		os.Exit(cli.RunCtr(os.Args[1:]))
	case "crictl":
		os.Exit(cli.RunCrictl(os.Args[1:]))
	}
	if err := cli.NewRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
