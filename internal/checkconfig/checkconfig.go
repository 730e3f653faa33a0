// Package checkconfig checks that a host can run a skiff node: what
// `skiff check-config` prints and what server start-up refuses to go on
// without. The facts come from package host; this package judges them.
package checkconfig

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Status is the outcome of one check.
type Status int

const (
	// OK means the feature is there.
	OK Status = iota
	// Missing means the feature is absent. For an Essential check skiff
	// will not start.
	Missing
	// Warning means skiff runs, but something is degraded or adapted around.
	Warning
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Missing:
		return "missing"
	case Warning:
		return "warning"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Check is one host feature and how it stands.
type Check struct {
	// Name is what the user reads in the table and in start-up errors.
	Name string
	// Detail is what was found, for the user.
	Detail string
	// Fix is a one-line hint for when Status is not OK.
	Fix    string
	Status Status
	// Essential means skiff cannot run a node while this check is Missing.
	Essential bool
}

// Essential returns the essential checks that are missing.
func Essential(checks []Check) []Check {
	var out []Check
	for _, c := range checks {
		if c.Essential && c.Status == Missing {
			out = append(out, c)
		}
	}
	return out
}

// EssentialError returns the error server start-up fails with when an
// essential check is missing, or nil.
func EssentialError(checks []Check) error {
	missing := Essential(checks)
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("missing essential host features: %s; run `skiff check-config` for details", Names(missing))
}

// Names joins the names of checks with commas.
func Names(checks []Check) string {
	names := make([]string, len(checks))
	for i, c := range checks {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// Print writes checks as an aligned table, one line each, then a summary:
//
//	ok       overlay filesystem  built in
//	missing  vxlan               not in /sys/module  (fix: enable CONFIG_VXLAN)
func Print(w io.Writer, checks []Check) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	counts := map[Status]int{}
	for _, c := range checks {
		counts[c.Status]++
		line := c.Status.String() + "\t" + c.Name + "\t" + c.Detail
		if c.Status != OK && c.Fix != "" {
			line += "  (fix: " + c.Fix + ")"
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d checks: %d ok, %d warnings, %d missing\n", len(checks), counts[OK], counts[Warning], counts[Missing])
	if missing := Essential(checks); len(missing) > 0 {
		fmt.Fprintf(w, "skiff cannot run a node here: missing essential %s\n", Names(missing))
	} else {
		fmt.Fprintln(w, "every essential feature is present")
	}
}
