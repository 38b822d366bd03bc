// Package datastore defines where droverd finds its node's pod CIDR and its
// peers, and where it publishes its own VTEP. There are two real
// implementations: the Kubernetes API (pkg/kube), used by every multi-node
// deployment, and a local directory (pkg/datastore/local) for a one-machine
// demo and tests. This package also holds the subnet choice both use when
// the cluster does not allocate pod CIDRs itself.
package datastore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
)

// Node is one node's overlay record.
type Node struct {
	Name       string
	PodCIDR    *net.IPNet       // nil while unknown
	VTEPMAC    net.HardwareAddr // nil until published
	UnderlayIP net.IP           // nil until published
	// InternalIP is the address the cluster knows the node by (in
	// Kubernetes the Node's InternalIP, which kubelet keeps current); nil
	// when the datastore has none. Not part of the published record: the
	// agent finds its underlay by it when nothing else is configured.
	InternalIP net.IP
}

// Complete reports whether n can be programmed as a peer.
func (n Node) Complete() bool {
	return n.PodCIDR != nil && len(n.VTEPMAC) == 6 && n.UnderlayIP.To4() != nil
}

// Datastore is the agent's view of the cluster.
type Datastore interface {
	// PodCIDR returns the node's pod CIDR: the one the cluster assigned,
	// or, when self-allocation is configured, one claimed for the node
	// (the same one on every later call). An answer that there is none is
	// an error wrapping ErrNoPodCIDR (or ErrNoFreeSubnet).
	PodCIDR(ctx context.Context, node string) (*net.IPNet, error)
	// Publish records the node's VTEP MAC and underlay IP for its peers.
	Publish(ctx context.Context, self Node) error
	// Watch calls onChange with the full set of nodes, first once the
	// initial set is known and again on every change, until ctx ends. It
	// never calls onChange with a partial initial view.
	Watch(ctx context.Context, onChange func([]Node)) error
}

// UnderlayHinter is implemented by datastores that know the node's own
// address (the Kubernetes Node's InternalIP), the default underlay when no
// interface or address is configured.
type UnderlayHinter interface {
	UnderlayIP(ctx context.Context, node string) (net.IP, error)
}

// Reconnecter is implemented by datastores that keep connections to a
// server. The agent calls Reconnect when the node's underlay address
// changed: a connection made from the old address is dead, but a kernel
// only learns that from timeouts, which would leave the watch silent and
// every write stalled for as long.
type Reconnecter interface {
	Reconnect()
}

// ErrNoPodCIDR says the datastore answered and the node has no pod CIDR: it
// is not registered, or nobody allocated one yet. Any other PodCIDR error
// means the datastore could not answer (unreachable, timed out), which is
// when an agent may fall back to the pod CIDR it used before.
var ErrNoPodCIDR = errors.New("node has no pod CIDR")

// ErrNoFreeSubnet says every subnet of the cluster CIDR is taken.
var ErrNoFreeSubnet = errors.New("no free pod subnet in the cluster CIDR")

// FreeSubnet returns the first subnet of cluster with prefix length mask
// that overlaps none of taken.
func FreeSubnet(cluster *net.IPNet, mask int, taken []*net.IPNet) (*net.IPNet, error) {
	cOnes, bits := cluster.Mask.Size()
	if bits != 32 || mask < cOnes || mask > 30 {
		return nil, fmt.Errorf("node CIDR mask /%d does not fit cluster CIDR %s (IPv4, /%d..30)", mask, cluster, cOnes)
	}
	base := binary.BigEndian.Uint32(cluster.IP.To4())
	size := uint32(1) << (32 - mask)
	count := uint64(1) << (mask - cOnes)
	for i := uint64(0); i < count; i++ {
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, base+uint32(i)*size)
		cand := &net.IPNet{IP: ip, Mask: net.CIDRMask(mask, 32)}
		free := true
		for _, t := range taken {
			if t != nil && (t.Contains(cand.IP) || cand.Contains(t.IP)) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return nil, fmt.Errorf("%w %s (/%d per node)", ErrNoFreeSubnet, cluster, mask)
}
