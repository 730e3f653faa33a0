package metricsserver

import (
	"bytes"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
)

// The APIService names the Service, which has no selector; the endpoints
// every server publishes (Addon.Serves) name its port.
func TestManifestRegistersTheAPIAtTheServers(t *testing.T) {
	data := Manifest(Config{ListenIP: net.ParseIP("192.0.2.7")})
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var api apiregistrationv1.APIService
	var svc corev1.Service
	for _, into := range []interface{}{&api, &svc} {
		if err := dec.Decode(into); err != nil {
			t.Fatal(err)
		}
	}
	if api.Name != "v1beta1.metrics.k8s.io" || api.Spec.Service == nil || api.Spec.Service.Name != svc.Name || api.Spec.Service.Namespace != svc.Namespace || *api.Spec.Service.Port != svc.Spec.Ports[0].Port {
		t.Errorf("APIService %+v does not name Service %s/%s", api.Spec, svc.Namespace, svc.Name)
	}
	served := Addon.Serves(nil)
	if svc.Spec.Selector != nil || len(served) != 1 || served[0].Name != svc.Name || served[0].Namespace != svc.Namespace ||
		served[0].Ports[0].Name != svc.Spec.Ports[0].Name || served[0].Ports[0].Port != DefaultPort {
		t.Errorf("Service %+v / served %+v", svc.Spec, served)
	}
}
