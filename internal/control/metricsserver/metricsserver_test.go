package metricsserver

import (
	"bytes"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
)

func TestManifestRegistersTheAPIAtTheServer(t *testing.T) {
	data := Manifest(Config{ListenIP: net.ParseIP("192.0.2.7")})
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var api apiregistrationv1.APIService
	var svc corev1.Service
	var slice discoveryv1.EndpointSlice
	for _, into := range []interface{}{&api, &svc, &slice} {
		if err := dec.Decode(into); err != nil {
			t.Fatal(err)
		}
	}
	if api.Name != "v1beta1.metrics.k8s.io" || api.Spec.Service == nil || api.Spec.Service.Name != svc.Name || api.Spec.Service.Namespace != svc.Namespace || *api.Spec.Service.Port != svc.Spec.Ports[0].Port {
		t.Errorf("APIService %+v does not name Service %s/%s", api.Spec, svc.Namespace, svc.Name)
	}
	if svc.Spec.Selector != nil || slice.Labels[discoveryv1.LabelServiceName] != svc.Name ||
		slice.Endpoints[0].Addresses[0] != "192.0.2.7" || *slice.Ports[0].Port != DefaultPort || *slice.Ports[0].Name != svc.Spec.Ports[0].Name {
		t.Errorf("Service %+v / EndpointSlice %+v", svc.Spec, slice)
	}
}
