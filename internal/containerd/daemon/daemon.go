// Package daemon is skiff's containerd personality: `skiff` started with argv[0]
// "containerd" runs the containerd daemon with the plugins listed in builtins.go.
// skiff runs it as a child process, never in its own process: containerd installs
// signal handlers and applies process-wide settings (oom score, TMPDIR, logging).
package daemon

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"
)

// Main runs containerd with args (args[0] is the program name) and returns the
// exit code.
func Main(args []string) int {
	if err := command.App().Run(context.Background(), args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		return 1
	}
	return 0
}
