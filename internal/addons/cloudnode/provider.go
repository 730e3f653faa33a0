// Package cloudnode is skiff's cloud node controller: upstream's
// (k8s.io/cloud-provider/controllers/node) with a provider that reads a
// node's addresses from the annotations the node sets on itself (package
// nodeaddrs), as K3s's embedded cloud-controller-manager does with its
// k3s.io annotations.
//
// Only a node started with --node-external-ip goes through it: its kubelet
// runs with --cloud-provider=external, registers the Node with the
// node.cloudprovider.kubernetes.io/uninitialized taint and then leaves
// Node.status.addresses alone; the controller sets InternalIP, ExternalIP
// and Hostname from the annotations and removes the taint. Every other
// node's kubelet keeps maintaining its own addresses, and the provider
// hands the controller those addresses back unchanged, so the two never
// disagree.
package cloudnode

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
	cloudproviderapi "k8s.io/cloud-provider/api"

	"github.com/skiffkube/skiff/internal/node/nodeaddrs"
)

// ProviderName is the provider's name, and the scheme of the provider IDs
// it gives nodes (skiff://<node name>).
const ProviderName = "skiff"

// Provider is the cloudprovider.Interface: instances (InstancesV2) only.
type Provider struct{}

var (
	_ cloudprovider.Interface   = Provider{}
	_ cloudprovider.InstancesV2 = Provider{}
)

func (Provider) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}
func (Provider) LoadBalancer() (cloudprovider.LoadBalancer, bool)                  { return nil, false }
func (Provider) Instances() (cloudprovider.Instances, bool)                        { return nil, false }
func (p Provider) InstancesV2() (cloudprovider.InstancesV2, bool)                  { return p, true }
func (Provider) Zones() (cloudprovider.Zones, bool)                                { return nil, false }
func (Provider) Clusters() (cloudprovider.Clusters, bool)                          { return nil, false }
func (Provider) Routes() (cloudprovider.Routes, bool)                              { return nil, false }
func (Provider) ProviderName() string                                              { return ProviderName }
func (Provider) HasClusterID() bool                                                { return false }

// InstanceExists is true: a node's machine is gone when its Node is deleted.
func (Provider) InstanceExists(context.Context, *corev1.Node) (bool, error) { return true, nil }

// InstanceShutdown is false: skiff cannot tell a machine is shut down.
func (Provider) InstanceShutdown(context.Context, *corev1.Node) (bool, error) { return false, nil }

// InstanceMetadata gives a node its provider ID and addresses. A node with
// the address annotations gets their addresses (internal, then external,
// then the host name); a node without them that still waits for
// initialisation (the uninitialized taint) is an error the controller
// retries on, as the node sets them right after registering; any other
// node gets its current addresses, which its kubelet maintains.
func (Provider) InstanceMetadata(_ context.Context, n *corev1.Node) (*cloudprovider.InstanceMetadata, error) {
	md := &cloudprovider.InstanceMetadata{ProviderID: n.Spec.ProviderID}
	if md.ProviderID == "" {
		md.ProviderID = ProviderName + "://" + n.Name
	}
	addrs, annotated, err := Addresses(n)
	if err != nil {
		return nil, err
	}
	if !annotated {
		if hasCloudTaint(n) {
			return nil, fmt.Errorf("node %s has not set its address annotations (%s) yet", n.Name, nodeaddrs.InternalIPAnnotation)
		}
		md.NodeAddresses = append([]corev1.NodeAddress(nil), n.Status.Addresses...)
		return md, nil
	}
	md.NodeAddresses = addrs
	return md, nil
}

// Addresses are the addresses n's annotations give it, internal first;
// annotated is false when n has no internal-ip annotation. A malformed
// address is an error naming the annotation.
func Addresses(n *corev1.Node) (addrs []corev1.NodeAddress, annotated bool, err error) {
	internal, ok := n.Annotations[nodeaddrs.InternalIPAnnotation]
	if !ok {
		return nil, false, nil
	}
	for _, a := range []struct {
		key string
		typ corev1.NodeAddressType
		val string
	}{
		{nodeaddrs.InternalIPAnnotation, corev1.NodeInternalIP, internal},
		{nodeaddrs.ExternalIPAnnotation, corev1.NodeExternalIP, n.Annotations[nodeaddrs.ExternalIPAnnotation]},
	} {
		for _, s := range strings.Split(a.val, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, true, fmt.Errorf("node %s: annotation %s: %q is not an IP address", n.Name, a.key, s)
			}
			addrs = append(addrs, corev1.NodeAddress{Type: a.typ, Address: ip.String()})
		}
	}
	if h := n.Annotations[nodeaddrs.HostnameAnnotation]; h != "" {
		addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: h})
	}
	return addrs, true, nil
}

func hasCloudTaint(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == cloudproviderapi.TaintExternalCloudProvider {
			return true
		}
	}
	return false
}
