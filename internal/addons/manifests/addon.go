package manifests

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// ObjectRef names an object a manifest applied.
type ObjectRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

// key identifies the object whatever version of its kind names it: a file
// that moves an object to another apiVersion still holds it.
func (r ObjectRef) key() ObjectRef {
	group := r.APIVersion
	if gv, err := schema.ParseGroupVersion(r.APIVersion); err == nil {
		group = gv.Group
	}
	return ObjectRef{APIVersion: group, Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
}

func containsRef(refs []ObjectRef, r ObjectRef) bool {
	k := r.key()
	for _, o := range refs {
		if o.key() == k {
			return true
		}
	}
	return false
}

// claims are objects some file holds, by key.
type claims map[ObjectRef]bool

func (c claims) add(r ObjectRef) { c[r.key()] = true }

// addObject claims an object of a file. One without a namespace lands in
// the default namespace if its kind is namespaced, so both are claimed.
func (c claims) addObject(o *unstructured.Unstructured) {
	r := ObjectRef{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName()}
	c.add(r)
	if r.Namespace == "" {
		r.Namespace = DefaultNamespace
		c.add(r)
	} else {
		// A cluster-scoped object is applied without the namespace a file
		// may give it.
		r.Namespace = ""
		c.add(r)
	}
}

func (c claims) has(r ObjectRef) bool { return c[r.key()] }

func (r ObjectRef) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

// addonCRD defines the Addon kind. spec.objects is what the file applied,
// which is what is pruned when the file or an object in it goes.
const addonCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: addons.skiff.io
spec:
  group: skiff.io
  scope: Namespaced
  names:
    kind: Addon
    listKind: AddonList
    plural: addons
    singular: addon
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - name: Source
      type: string
      jsonPath: .spec.source
    - name: Checksum
      type: string
      jsonPath: .spec.checksum
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        description: An Addon records what skiff applied from one file in the server's manifests directory.
        properties:
          spec:
            type: object
            properties:
              source:
                type: string
                description: The manifest file.
              checksum:
                type: string
                description: SHA-256 of the file as last applied.
              objects:
                type: array
                description: The objects the file applied; they are pruned when they leave the file.
                items:
                  type: object
                  required: [apiVersion, kind, name]
                  properties:
                    apiVersion: {type: string}
                    kind: {type: string}
                    namespace: {type: string}
                    name: {type: string}
`

// ensureCRD applies the Addon CRD and waits until the API serves it.
func (c *Controller) ensureCRD(ctx context.Context) error {
	var obj map[string]interface{}
	if err := yaml.Unmarshal([]byte(addonCRD), &obj); err != nil {
		return fmt.Errorf("addon CRD: %w", err)
	}
	if _, err := c.apply(ctx, &unstructured.Unstructured{Object: obj}); err != nil {
		return fmt.Errorf("applying the Addon CRD: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.dyn.Resource(addonGVR).Namespace(AddonNamespace).List(ctx, metav1.ListOptions{Limit: 1})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the Addon CRD is not served: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// addonObjects reads spec.objects.
func addonObjects(a *unstructured.Unstructured) []ObjectRef {
	items, _, _ := unstructured.NestedSlice(a.Object, "spec", "objects")
	var out []ObjectRef
	for _, it := range items {
		m, ok := it.(map[string]interface{})
		if !ok {
			continue
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		out = append(out, ObjectRef{APIVersion: str("apiVersion"), Kind: str("kind"), Namespace: str("namespace"), Name: str("name")})
	}
	return out
}

// writeAddon records a file's checksum and objects.
func (c *Controller) writeAddon(ctx context.Context, name, source, sum string, objs []ObjectRef) error {
	items := make([]interface{}, 0, len(objs))
	for _, r := range objs {
		m := map[string]interface{}{"apiVersion": r.APIVersion, "kind": r.Kind, "name": r.Name}
		if r.Namespace != "" {
			m["namespace"] = r.Namespace
		}
		items = append(items, m)
	}
	a := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "skiff.io/v1",
		"kind":       "Addon",
		"metadata": map[string]interface{}{"name": name, "namespace": AddonNamespace,
			"labels": map[string]interface{}{ServerLabel: c.cfg.Server}},
		"spec": map[string]interface{}{"source": source, "checksum": sum, "objects": items},
	}}
	_, err := c.dyn.Resource(addonGVR).Namespace(AddonNamespace).Apply(ctx, name, a, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	return err
}
