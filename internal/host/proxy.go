package host

import "errors"

// Proxy modes, named as kube-proxy's --proxy-mode names them.
const (
	ProxyModeIPTables = "iptables"
	ProxyModeNFTables = "nftables"
)

// ProxyMode picks kube-proxy's mode from the packet-filter tools installed:
// iptables when an iptables binary is on PATH (K3s's default, and what most
// CNI plugins and port-mapping still expect), else nftables when nft is.
func (h Host) ProxyMode() (string, error) {
	switch {
	case h.HasExecutable("iptables"):
		return ProxyModeIPTables, nil
	case h.HasExecutable("nft"):
		return ProxyModeNFTables, nil
	}
	return "", errors.New("neither iptables nor nft is on PATH: install iptables (apt-get install iptables) or nftables, and run `skiff check-config` for the rest")
}
