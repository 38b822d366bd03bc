package overlay

import (
	"bytes"
	"fmt"
	"net"
	"sort"
)

// Rejection is a peer Validate refused, and why.
type Rejection struct {
	Peer   Peer
	Reason string
}

func (r Rejection) String() string { return r.Peer.Name + ": " + r.Reason }

// Validate returns the peers that can be programmed together with the node
// self (its pod CIDR and VTEP MAC), and the ones that cannot. Routes are
// keyed by destination and FDB entries by MAC, so a peer whose pod CIDR
// overlaps this node's would replace or shadow the local bridge route, and
// two peers sharing a pod CIDR or a VTEP MAC would overwrite each other's
// entries on every reconcile. A pod CIDR outside the cluster CIDR (nil:
// unchecked) is refused too: an annotation saying 0.0.0.0/0 must not become
// a default route. The choice is deterministic, the same on every node and
// every reconcile: peers are taken in node-name order and the lexically
// smaller name keeps a contested subnet or MAC.
func Validate(self Peer, cluster *net.IPNet, peers []Peer) ([]Peer, []Rejection) {
	sorted := append([]Peer(nil), peers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var ok []Peer
	var rejected []Rejection
	reject := func(p Peer, format string, args ...any) {
		rejected = append(rejected, Rejection{Peer: p, Reason: fmt.Sprintf(format, args...)})
	}
next:
	for _, p := range sorted {
		switch {
		case p.PodCIDR == nil || p.UnderlayIP.To4() == nil || len(p.VTEPMAC) != 6:
			reject(p, "incomplete record (pod CIDR %v, underlay %v, VTEP MAC %v)", p.PodCIDR, p.UnderlayIP, p.VTEPMAC)
			continue
		case cluster != nil && !within(cluster, p.PodCIDR):
			reject(p, "pod CIDR %s is outside the cluster CIDR %s", p.PodCIDR, cluster)
			continue
		case self.PodCIDR != nil && overlap(self.PodCIDR, p.PodCIDR):
			reject(p, "pod CIDR %s overlaps this node's %s", p.PodCIDR, self.PodCIDR)
			continue
		case bytes.Equal(p.VTEPMAC, self.VTEPMAC):
			reject(p, "VTEP MAC %s is this node's", p.VTEPMAC)
			continue
		}
		for _, o := range ok {
			if overlap(o.PodCIDR, p.PodCIDR) {
				reject(p, "pod CIDR %s overlaps %s of peer %s", p.PodCIDR, o.PodCIDR, o.Name)
				continue next
			}
			if bytes.Equal(o.VTEPMAC, p.VTEPMAC) {
				reject(p, "VTEP MAC %s is also peer %s's", p.VTEPMAC, o.Name)
				continue next
			}
		}
		ok = append(ok, p)
	}
	return ok, rejected
}

func overlap(a, b *net.IPNet) bool { return a.Contains(b.IP) || b.Contains(a.IP) }

// within reports whether inner lies entirely inside outer.
func within(outer, inner *net.IPNet) bool {
	oo, _ := outer.Mask.Size()
	io, _ := inner.Mask.Size()
	return oo <= io && outer.Contains(inner.IP)
}
