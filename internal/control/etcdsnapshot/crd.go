package etcdsnapshot

import (
	"context"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Group, version and resource of the API's snapshot objects.
const (
	Group    = "skiff.io"
	Version  = "v1"
	Resource = "etcdsnapshotfiles"
	Kind     = "ETCDSnapshotFile"
)

// GVR is the resource of ETCDSnapshotFile objects.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// CRD is the cluster-scoped ETCDSnapshotFile definition: one object per
// snapshot file on a server, as K3s's k3s.cattle.io one.
func CRD() *apiextensionsv1.CustomResourceDefinition {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: Resource + "." + Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: Group,
			Scope: apiextensionsv1.ClusterScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Kind: Kind, ListKind: Kind + "List", Plural: Resource, Singular: "etcdsnapshotfile",
			},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: Version, Served: true, Storage: true,
				AdditionalPrinterColumns: []apiextensionsv1.CustomResourceColumnDefinition{
					{Name: "SnapshotName", Type: "string", JSONPath: ".spec.snapshotName"},
					{Name: "Node", Type: "string", JSONPath: ".spec.nodeName"},
					{Name: "Location", Type: "string", JSONPath: ".spec.location"},
					{Name: "Size", Type: "integer", JSONPath: ".spec.size"},
					{Name: "CreationTime", Type: "date", JSONPath: ".spec.createdAt"},
				},
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type:        "object",
					Description: "A snapshot of the cluster's datastore (embedded etcd or SQLite), kept as a file on a server. Written by skiff; deleting the object does not delete the file (use skiff etcd-snapshot delete).",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"snapshotName": str,
							"nodeName":     str,
							"location":     {Type: "string", Description: "file:// URL of the snapshot on its node."},
							"size":         {Type: "integer", Format: "int64", Description: "Size in bytes."},
							"createdAt":    {Type: "string", Format: "date-time"},
							"compressed":   {Type: "boolean"},
							"datastore":    {Type: "string", Description: "sqlite or etcd."},
						}},
						"status": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"readyToUse": {Type: "boolean"},
							"error":      str,
						}},
					},
				}},
			}},
		},
	}
}

// ensureCRD creates or updates the CRD and waits until it is established.
func ensureCRD(ctx context.Context, c apiextensions.Interface) error {
	want := CRD()
	crds := c.ApiextensionsV1().CustomResourceDefinitions()
	cur, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = crds.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		cur.Spec = want.Spec
		_, err = crds.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("installing the %s CRD: %w", want.Name, err)
	}
	return wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		got, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}
