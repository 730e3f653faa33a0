package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// fileValue is one flag's value after merging all config files: one item for
// a scalar, any number for a list. Each item remembers where it came from so
// an invalid value can be traced to its file.
type fileValue struct {
	items []fileItem
}

type fileItem struct {
	file, key, value string
}

// readFiles reads the config file and its drop-ins and merges them into one
// value per flag name. Keys are checked against fs here, where the file is
// still known.
func readFiles(fs *pflag.FlagSet, path string, explicit bool) (map[string]*fileValue, error) {
	merged := map[string]*fileValue{}
	if path == "" {
		return merged, nil
	}
	paths, err := configPaths(path, explicit)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading config file: %w", err)
		}
		if err := mergeFile(fs, merged, p, data); err != nil {
			return nil, err
		}
	}
	return merged, nil
}

// configPaths lists the files to read: path itself if it exists, then the
// *.yaml and *.yml files in path.d/ in lexical order.
func configPaths(path string, explicit bool) ([]string, error) {
	var paths []string
	switch _, err := os.Stat(path); {
	case err == nil:
		paths = append(paths, path)
	case errors.Is(err, os.ErrNotExist) && !explicit:
		// The default file is optional; drop-ins may still exist.
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("config file %s does not exist", path)
	default:
		return nil, fmt.Errorf("reading config file: %w", err)
	}

	dir := path + ".d"
	entries, err := os.ReadDir(dir) // sorted by name
	if errors.Is(err, os.ErrNotExist) {
		return paths, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading config directory: %w", err)
	}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	return paths, nil
}

// mergeFile parses one config file and merges its keys into merged: a key
// replaces the earlier value, a key written "name+" appends to it.
//
// It works on yaml.Node rather than decoding into Go values so that a scalar
// keeps the text the user wrote: "0644" stays "0644" instead of becoming the
// integer 420, and every value reaches the flag's own parser as written.
func mergeFile(fs *pflag.FlagSet, merged map[string]*fileValue, path string, data []byte) error {
	root, err := settingsDocument(path, data)
	if err != nil || root == nil {
		return err
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: line %d: want a mapping of option names to values", path, root.Line)
	}

	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		keyNode, valueNode := root.Content[i], resolveAlias(root.Content[i+1])
		key := keyNode.Value
		if keyNode.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s: line %d: keys must be option names", path, keyNode.Line)
		}
		if seen[key] {
			return fmt.Errorf("%s: key %q appears twice", path, key)
		}
		seen[key] = true

		name, appending := strings.CutSuffix(key, "+")
		flag := fs.Lookup(name)
		switch {
		case name == "config":
			return fmt.Errorf("%s: key %q cannot be set in a config file; use --config or %s", path, key, EnvName("config"))
		case commandFlags[name]:
			return fmt.Errorf("%s: key %q cannot be set in a config file", path, key)
		case flag == nil:
			return fmt.Errorf("%s: unknown key %q%s", path, key, suggest(fs, name))
		}
		_, isList := flag.Value.(pflag.SliceValue)
		if appending && !isList {
			return fmt.Errorf("%s: key %q: only list options can be appended to with \"+\"", path, key)
		}

		values, err := nodeValues(valueNode, isList)
		if err != nil {
			return fmt.Errorf("%s: key %q: %w", path, key, err)
		}
		if flag.Value.Type() == "bool" && valueNode.Kind == yaml.ScalarNode && valueNode.Style == 0 {
			if b, ok := yaml11Bools[valueNode.Value]; ok {
				values = []string{b}
			}
		}
		var items []fileItem
		if prev := merged[name]; appending && prev != nil {
			items = append(items, prev.items...)
		}
		for _, v := range values {
			items = append(items, fileItem{file: path, key: key, value: v})
		}
		merged[name] = &fileValue{items: items}
	}
	return nil
}

// settingsDocument returns the one document of a config file that holds
// settings, or nil if there is none. Documents that are empty, null or only
// comments are skipped, so a "---" at the start or the end of a file (as
// many editors and generators write) is harmless. Two documents with
// settings are refused: which one wins would be a guess.
func settingsDocument(path string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var found *yaml.Node
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return found, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := resolveAlias(doc.Content[0])
		if isNull(root) {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("%s: line %d: a second YAML document with settings (the first starts at line %d); keep one document per file (another file can go in the config's .d/ directory)", path, root.Line, found.Line)
		}
		found = root
	}
}

// yaml11Bools are the plain (unquoted) scalars that YAML 1.1 reads as
// booleans. K3s reads its config files with a YAML 1.1 library and so
// accepts "enabled: yes"; skiff's YAML library follows YAML 1.2, which
// leaves them as strings, so a boolean option maps them itself. (The
// spellings strconv.ParseBool knows, such as "1" or "T", need no mapping.)
var yaml11Bools = map[string]string{
	"y": "true", "Y": "true", "yes": "true", "Yes": "true", "YES": "true",
	"on": "true", "On": "true", "ON": "true",
	"n": "false", "N": "false", "no": "false", "No": "false", "NO": "false",
	"off": "false", "Off": "false", "OFF": "false",
}

// nodeValues returns the scalar texts of a value. A null clears a list, and
// sets a single-value option to the empty string.
func nodeValues(n *yaml.Node, isList bool) ([]string, error) {
	switch {
	case isNull(n) && isList:
		return nil, nil
	case n.Kind == yaml.ScalarNode:
		return []string{scalarText(n)}, nil
	case n.Kind == yaml.SequenceNode && !isList:
		return nil, fmt.Errorf("got a list, but the option takes a single value")
	case n.Kind == yaml.SequenceNode:
		values := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			item = resolveAlias(item)
			if item.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: list items must be single values", item.Line)
			}
			values = append(values, scalarText(item))
		}
		return values, nil
	default:
		return nil, fmt.Errorf("line %d: want a single value or a list", n.Line)
	}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// scalarText is the value as written, with null ("~", "null", nothing) as "".
func scalarText(n *yaml.Node) string {
	if isNull(n) {
		return ""
	}
	return n.Value
}

// suggest returns ` (did you mean "x"?)` for the flag name closest to a
// mistyped key, or "" if none is close. Typos and '_' for '-' are the common
// cases, and both are a small edit distance away.
func suggest(fs *pflag.FlagSet, key string) string {
	best, bestDist := "", 3 // suggest only within two edits
	fs.VisitAll(func(f *pflag.Flag) {
		if d := editDistance(key, f.Name); d < bestDist && d < len(key) && !commandFlags[f.Name] {
			best, bestDist = f.Name, d
		}
	})
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
