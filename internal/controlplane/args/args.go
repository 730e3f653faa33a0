// Package args turns skiff's generated settings plus a user's passthrough
// arguments (--kube-apiserver-arg and friends) into an upstream component's
// command line, and parses it with that component's own flag sets.
package args

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// Build returns "--key=value" arguments: every generated setting, with each key
// the user also passed replaced by the user's value. User keys skiff did not
// generate are appended in the order given. A user entry without "=" sets the
// flag to "true", as a bare boolean flag would.
func Build(generated map[string]string, user []string) []string {
	merged := make(map[string]string, len(generated)+len(user))
	for k, v := range generated {
		merged[k] = v
	}
	var extraOrder []string
	for _, u := range user {
		k, v := Split(u)
		if _, seen := merged[k]; !seen {
			extraOrder = append(extraOrder, k)
		}
		merged[k] = v
	}
	keys := make([]string, 0, len(generated))
	for k := range generated {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(merged))
	for _, k := range append(keys, extraOrder...) {
		out = append(out, "--"+k+"="+merged[k])
	}
	return out
}

// Split parses one passthrough entry, "key=value", "--key=value" or "key".
func Split(entry string) (key, value string) {
	entry = strings.TrimLeft(entry, "-")
	key, value, found := strings.Cut(entry, "=")
	if !found {
		value = "true"
	}
	return key, value
}

// Has reports whether the user's passthrough entries set key.
func Has(user []string, key string) bool {
	_, ok := Value(user, key)
	return ok
}

// Value is the value the user's passthrough entries give key; the last
// entry wins, as it does on the component's command line.
func Value(user []string, key string) (value string, ok bool) {
	for _, u := range user {
		if k, v := Split(u); k == key {
			value, ok = v, true
		}
	}
	return value, ok
}

// Parse parses args into the component's named flag sets. flagName is the
// skiff flag that carries passthrough arguments, so that an error points at
// what the user can change.
func Parse(component, flagName string, fss cliflag.NamedFlagSets, args []string) error {
	fs := pflag.NewFlagSet(component, pflag.ContinueOnError)
	fs.SetOutput(discard{})
	for _, name := range fss.Order {
		fs.AddFlagSet(fss.FlagSets[name])
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s arguments (set through --%s): %w", component, flagName, err)
	}
	return nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
