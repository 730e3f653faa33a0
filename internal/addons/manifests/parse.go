package manifests

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// extensions are the files the controller manages.
var extensions = []string{".yaml", ".yml", ".json"}

// SkipSuffix next to a manifest's name stops skiff from managing it.
const SkipSuffix = ".skip"

// isManifest reports whether name is a file the controller applies.
func isManifest(name string) bool {
	return slices.Contains(extensions, strings.ToLower(filepath.Ext(name))) && !strings.HasPrefix(name, ".")
}

var invalidName = regexp.MustCompile(`[^a-z0-9-]+`)

// AddonName is the Addon object of a manifest file, from its path relative
// to the manifests directory: its name without the extension, as a
// Kubernetes name. A file in a subdirectory is named by its whole path
// ("apps/web.yaml": "apps-web-" and a hash of "apps/web"), so that files of
// one name in two directories stay apart. A name too long is cut and given
// a hash of the whole, so that two long names stay apart; two files that
// still share a name (a.yaml and a.json) are refused by the controller.
func AddonName(rel string) string {
	rel = filepath.ToSlash(rel)
	stem := strings.TrimSuffix(rel, filepath.Ext(rel))
	name := strings.Trim(invalidName.ReplaceAllString(strings.ToLower(stem), "-"), "-")
	if name == "" {
		name = "manifest"
	}
	if strings.Contains(stem, "/") || len(name) > 63 {
		if len(name) > 54 {
			name = strings.TrimRight(name[:54], "-")
		}
		name += "-" + checksum([]byte(stem))[:8]
	}
	return name
}

// checksum is the hex SHA-256 of a file's content.
func checksum(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// parse reads every object of a YAML (multi-document) or JSON file. A List
// is flattened into its items; empty documents are skipped.
func parse(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for doc := 1; ; doc++ {
		var raw map[string]interface{}
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(raw) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: raw}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", doc, err)
			}
			for i := range list.Items {
				item := list.Items[i]
				if err := checkObject(&item); err != nil {
					return nil, fmt.Errorf("document %d, item %d: %w", doc, i+1, err)
				}
				out = append(out, &item)
			}
			continue
		}
		if err := checkObject(u); err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		out = append(out, u)
	}
}

func checkObject(u *unstructured.Unstructured) error {
	switch {
	case u.GetAPIVersion() == "":
		return errors.New("no apiVersion")
	case u.GetKind() == "":
		return errors.New("no kind")
	case u.GetName() == "":
		return fmt.Errorf("%s has no metadata.name", u.GetKind())
	}
	return nil
}

// applyOrder puts what other objects depend on first (namespaces, CRDs),
// keeping the file's order otherwise.
func applyOrder(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	rank := func(u *unstructured.Unstructured) int {
		switch u.GetKind() {
		case "Namespace":
			return 0
		case "CustomResourceDefinition":
			return 1
		}
		return 2
	}
	out := slices.Clone(objs)
	slices.SortStableFunc(out, func(a, b *unstructured.Unstructured) int { return rank(a) - rank(b) })
	return out
}
