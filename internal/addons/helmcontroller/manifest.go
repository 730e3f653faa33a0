package helmcontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
)

// ManifestFile is the add-on's file in the manifests dir: the CRDs, so that
// --disable-helm-controller prunes them.
const ManifestFile = "helm-controller.yaml"

func mustJSON(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain values are marshalled
	}
	return string(b)
}

// Manifest is the HelmChart and HelmChartConfig CRDs.
func Manifest() []byte {
	return []byte(`# Written by skiff at every start; create helm-controller.yaml.skip to manage it yourself.
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: helmcharts.helm.skiff.io
spec:
  group: helm.skiff.io
  scope: Namespaced
  names: {kind: HelmChart, listKind: HelmChartList, plural: helmcharts, singular: helmchart}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Chart, type: string, jsonPath: .spec.chart}
    - {name: Version, type: string, jsonPath: .spec.version}
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Revision, type: integer, jsonPath: .status.revision}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        description: A Helm chart skiff installs, upgrades on change and uninstalls on delete, in process.
        properties:
          spec:
            type: object
            properties:
              chart: {type: string, description: "A chart name in repo, or a file in the server's static directory: /static/<path>."}
              repo: {type: string}
              version: {type: string}
              targetNamespace: {type: string, description: "Where the release goes (default: this object's namespace)."}
              valuesContent: {type: string, description: "Values as YAML."}
              set:
                type: object
                additionalProperties: {x-kubernetes-int-or-string: true}
              chartContent: {type: string, description: "A chart archive (.tgz), base64."}
          status:
            type: object
            properties:
              phase: {type: string, description: "Installing or Upgrading while Helm works, then Installed or Failed."}
              release: {type: string}
              revision: {type: integer}
              message: {type: string}
              applied: {type: string}
              namespace: {type: string}
              observedGeneration: {type: integer}
              configVersion: {type: string}
              inFlight:
                type: object
                nullable: true
                description: "The Helm operation the controller started and has not seen settle: the only pending release it recovers."
                properties:
                  instance: {type: string}
                  namespace: {type: string}
                  revision: {type: integer}
                  operation: {type: string}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: helmchartconfigs.helm.skiff.io
spec:
  group: helm.skiff.io
  scope: Namespaced
  names: {kind: HelmChartConfig, listKind: HelmChartConfigList, plural: helmchartconfigs, singular: helmchartconfig}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        description: Values merged over those of the HelmChart of the same name and namespace.
        properties:
          spec:
            type: object
            properties:
              valuesContent: {type: string}
`)
}

// ReleaseFinalizers lets HelmCharts go when the controller is disabled: its
// CRDs are pruned, and their objects would otherwise wait forever for a
// controller to uninstall them. Their releases stay installed.
func ReleaseFinalizers(ctx context.Context, kubeconfig string, log *slog.Logger) error {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list, err := dyn.Resource(chartGVR).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing HelmCharts: %w", err)
	}
	for _, u := range list.Items {
		var keep []string
		found := false
		for _, f := range u.GetFinalizers() {
			if f == Finalizer {
				found = true
				continue
			}
			keep = append(keep, f)
		}
		if !found {
			continue
		}
		patch := fmt.Sprintf(`{"metadata":{"finalizers":%s}}`, mustJSON(keep))
		if _, err := dyn.Resource(chartGVR).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("releasing HelmChart %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		log.Info("helm controller disabled: HelmChart let go, its release stays", "component", "helm-controller", "helmchart", u.GetNamespace()+"/"+u.GetName())
	}
	return nil
}

// Cleanup is the component that runs in the controller's place when it is
// disabled: it lets the HelmCharts go (see ReleaseFinalizers).
type Cleanup struct {
	kubeconfig string
	log        *slog.Logger
}

// NewCleanup returns the cleanup component.
func NewCleanup(kubeconfig string, log *slog.Logger) *Cleanup {
	return &Cleanup{kubeconfig: kubeconfig, log: log}
}

func (c *Cleanup) Name() string               { return "helm-controller-cleanup" }
func (c *Cleanup) Init(context.Context) error { return nil }
func (c *Cleanup) Ready() error               { return nil }
func (c *Cleanup) Stop() error                { return nil }

// Start is best effort: a failure is logged, and start-up goes on.
func (c *Cleanup) Start(ctx context.Context) error {
	if err := ReleaseFinalizers(ctx, c.kubeconfig, c.log); err != nil {
		c.log.Warn("helm controller disabled: HelmCharts not let go", "component", "helm-controller", "err", err)
	}
	return nil
}
