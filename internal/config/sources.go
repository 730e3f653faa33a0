package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// DefaultConfigFile is read when neither --config nor SKIFF_CONFIG names a
// file. It may be missing.
const DefaultConfigFile = "/etc/skiff/config.yaml"

// EnvPrefix starts the name of every environment variable skiff reads.
const EnvPrefix = "SKIFF_"

// commandFlags are about running the command, not about what it configures,
// so files and the environment cannot set them. (SKIFF_CONFIG is read by
// SourcesFromFlags, before any file is.)
var commandFlags = map[string]bool{"config": true, "help": true, "version": true}

// Sources says where ApplySources looks for values besides the command line.
type Sources struct {
	// ConfigFile is the main config file; drop-ins are read from
	// ConfigFile + ".d/". Empty means no files at all.
	ConfigFile string
	// ConfigFileExplicit is true when the user named ConfigFile (--config or
	// SKIFF_CONFIG); then a missing file is an error. The default file may
	// be missing.
	ConfigFileExplicit bool
	// LookupEnv reads the environment: os.LookupEnv in production, a map in
	// tests. Nil means an empty environment.
	LookupEnv func(string) (string, bool)
}

// AddConfigFlag registers --config (-c), the path of the config file.
func AddConfigFlag(fs *pflag.FlagSet, path *string) {
	fs.StringVarP(path, "config", "c", DefaultConfigFile, "config file; *.yaml files in <config>.d/ are read after it")
}

// SourcesFromFlags picks the config file: --config if given, else
// SKIFF_CONFIG if set, else DefaultConfigFile.
func SourcesFromFlags(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) Sources {
	src := Sources{ConfigFile: DefaultConfigFile, LookupEnv: lookupEnv}
	if f := fs.Lookup("config"); f != nil && f.Changed {
		src.ConfigFile, src.ConfigFileExplicit = f.Value.String(), true
	} else if lookupEnv != nil {
		if v, ok := lookupEnv(EnvName("config")); ok && v != "" {
			src.ConfigFile, src.ConfigFileExplicit = v, true
		}
	}
	return src
}

// EnvName is the environment variable for a flag: SKIFF_ and the name
// upper-cased with '-' as '_' (data-dir → SKIFF_DATA_DIR).
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ApplySources fills every flag of fs that was not set on the command line,
// from the environment or else from the config files (see the package
// documentation for the order). Values go through fs.Set, so each flag parses
// its own values, and fs.Changed afterwards reports a value from any source.
//
// Environment values:
//   - An empty variable counts as unset, so that a blank line in an
//     environment file does not clear a setting.
//   - For list flags the value is comma-separated. That includes StringArray
//     flags such as kube-apiserver-arg, whose entries therefore cannot
//     contain a comma when given this way; use a config file for those.
//
// It returns the first error; each error names the file and key or the
// environment variable, and hides secret values.
func ApplySources(fs *pflag.FlagSet, src Sources) error {
	_, err := LoadSources(fs, src)
	return err
}

// Origins says where the value of each flag that was not given on the
// command line came from: an environment variable, or the config files and
// keys of its items. Origins.Explain uses it to make errors found after
// loading (Validate's) name the file or variable the user has to edit.
type Origins map[string]origin

type origin struct {
	env   string     // SKIFF_X, when the value came from the environment
	items []fileItem // else the file items, in the order applied
}

// LoadSources is ApplySources that also returns where each value came from.
func LoadSources(fs *pflag.FlagSet, src Sources) (Origins, error) {
	origins := Origins{}
	files, err := readFiles(fs, src.ConfigFile, src.ConfigFileExplicit)
	if err != nil {
		return nil, err
	}
	lookupEnv := src.LookupEnv
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}

	// Decide what to fill before filling anything: fs.Set marks flags as
	// changed, and only the user's command line may shadow other sources.
	var unset []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Changed && !commandFlags[f.Name] {
			unset = append(unset, f)
		}
	})

	for _, f := range unset {
		if v, ok := lookupEnv(EnvName(f.Name)); ok && v != "" {
			if err := setFromEnv(fs, f, v); err != nil {
				return nil, err
			}
			origins[f.Name] = origin{env: EnvName(f.Name)}
			continue
		}
		if v, ok := files[f.Name]; ok {
			if err := setFromFiles(fs, f, v); err != nil {
				return nil, err
			}
			origins[f.Name] = origin{items: v.items}
		}
	}
	return origins, nil
}

// Explain prefixes each *FieldError in errs whose flag was set from a
// config file or the environment with where that was ("FILE: key \"K\": "
// or "environment variable SKIFF_X: "), so the user knows what to edit. For
// an error about one item of a list, the file is that item's. Other errors
// are returned as they are.
func (o Origins) Explain(errs []error) []error {
	out := make([]error, len(errs))
	for i, err := range errs {
		out[i] = err
		var fe *FieldError
		if !errors.As(err, &fe) {
			continue
		}
		if where := o[fe.Flag].describe(fe.Value); where != "" {
			out[i] = fmt.Errorf("%s: %w", where, err)
		}
	}
	return out
}

// describe names where value (or, if it is not one item, the whole
// option) came from; "" for the command line or the default.
func (o origin) describe(value string) string {
	if o.env != "" {
		return "environment variable " + o.env
	}
	var files []string
	key := ""
	for _, it := range o.items {
		if value != "" && (it.value == value || slices.ContainsFunc(strings.Split(it.value, ","), func(v string) bool { return strings.TrimSpace(v) == value })) {
			return fmt.Sprintf("%s: key %q", it.file, it.key)
		}
		if !slices.Contains(files, it.file) {
			files = append(files, it.file)
		}
		key = it.key
	}
	if len(files) == 0 {
		return ""
	}
	return fmt.Sprintf("%s: key %q", strings.Join(files, ", "), key)
}

func setFromEnv(fs *pflag.FlagSet, f *pflag.Flag, value string) error {
	values := []string{value}
	// StringSlice splits on commas itself; StringArray never does.
	if f.Value.Type() == "stringArray" {
		values = strings.Split(value, ",")
	}
	for _, v := range values {
		if err := fs.Set(f.Name, v); err != nil {
			return fmt.Errorf("environment variable %s: %w", EnvName(f.Name), invalidValue(f.Name, v, err))
		}
	}
	return nil
}

func setFromFiles(fs *pflag.FlagSet, f *pflag.Flag, v *fileValue) error {
	if len(v.items) == 0 {
		// An explicit empty list ("tls-san: []") clears the default. fs.Set
		// cannot express that for every list type, so replace directly.
		if list, ok := f.Value.(pflag.SliceValue); ok {
			f.Changed = true
			return list.Replace([]string{})
		}
	}
	for _, it := range v.items {
		if err := fs.Set(f.Name, it.value); err != nil {
			err = invalidValue(f.Name, it.value, err)
			if f.Value.Type() == "bool" {
				err = fmt.Errorf("%w; want true or false (or unquoted yes, no, on, off)", err)
			}
			return fmt.Errorf("%s: key %q: %w", it.file, it.key, err)
		}
	}
	return nil
}

// invalidValue describes a value the flag rejected. pflag's own message
// repeats the flag's command-line spelling, which is wrong for env and file
// values, so only its cause is kept. A secret value is redacted in the cause
// too, since parse errors quote their input.
func invalidValue(flag, value string, err error) error {
	var ive *pflag.InvalidValueError
	if errors.As(err, &ive) {
		err = ive.Unwrap()
	}
	shown := redactValue(flag, value)
	if shown == value {
		return fmt.Errorf("invalid value %q: %w", value, err)
	}
	msg := err.Error()
	if value != "" {
		msg = strings.ReplaceAll(msg, value, shown)
	}
	return fmt.Errorf("invalid value %q: %s", shown, msg)
}
