// Package version holds skiff's version, set at link time by the Makefile.
package version

// Set with -ldflags "-X github.com/skiffkube/skiff/internal/version.Version=...".
var (
	Version   = "v0.0.0-dev"
	GitCommit = "unknown"
)
