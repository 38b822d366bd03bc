// Package overlay programs a node's remote peers into the kernel. It holds
// the whole multi-node data path decision and nothing else: it does not find
// peers (pkg/kube and the local datastore do) and does not own the VXLAN
// device (pkg/vxlan does).
//
// Design (flannel's VXLAN scheme, which needs no miss handler and never
// floods): each node's VXLAN device carries the network address of the
// node's pod CIDR as a /32, its VTEP address. For every remote peer the node
// holds exactly
//
//   - one route:      <peer pod CIDR> via <peer VTEP address> dev drover.vxlan onlink
//   - one neighbour:  <peer VTEP address> lladdr <peer VTEP MAC> permanent
//   - one FDB entry:  <peer VTEP MAC> dst <peer underlay IP> self permanent
//
// The route picks the device and a next hop, the neighbour turns the next
// hop into the inner destination MAC without ARP, and the FDB entry turns
// that MAC into the outer destination IP. Peers on the node's own underlay
// subnet can instead be reached by direct routing, when enabled: one route
// <peer pod CIDR> via <peer underlay IP> dev <underlay>, no encapsulation.
//
// Sync is a reconcile: it reads what the kernel has, compares it with what
// the peers need, and writes only the difference, so running it every few
// seconds repairs hand-deleted entries and flaps nothing.
package overlay

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// RouteProtocol marks the routes drover installs, so a reconcile removes
// stale routes of its own and never anyone else's.
const RouteProtocol netlink.RouteProtocol = 77

// Peer is one remote node as the overlay needs it.
type Peer struct {
	Name       string
	PodCIDR    *net.IPNet
	VTEPMAC    net.HardwareAddr
	UnderlayIP net.IP
}

// Config says where to program peers.
type Config struct {
	Device        string     // the VXLAN device
	Underlay      int        // underlay link index, for direct routes
	UnderlayNet   *net.IPNet // the node's underlay subnet
	DirectRouting bool
}

// VTEPAddr is the VTEP address of a node with the given pod CIDR: its
// network address.
func VTEPAddr(podCIDR *net.IPNet) net.IP {
	return podCIDR.IP.Mask(podCIDR.Mask).To4()
}

// Direct reports whether p is reached without encapsulation.
func (c Config) Direct(p Peer) bool {
	return c.DirectRouting && c.UnderlayNet != nil && c.UnderlayNet.Contains(p.UnderlayIP)
}

// Changes counts what a Sync wrote.
type Changes struct {
	RoutesSet, RoutesDeleted int
	NeighSet, NeighDeleted   int
	FDBSet, FDBDeleted       int
}

// Total is the number of kernel writes.
func (c Changes) Total() int {
	return c.RoutesSet + c.RoutesDeleted + c.NeighSet + c.NeighDeleted + c.FDBSet + c.FDBDeleted
}

// Sync makes the kernel hold exactly what peers need: missing or wrong
// entries are written, entries of departed peers removed.
func Sync(cfg Config, peers []Peer) (Changes, error) {
	var ch Changes
	dev, err := netlink.LinkByName(cfg.Device)
	if err != nil {
		return ch, fmt.Errorf("look up %s: %w", cfg.Device, err)
	}
	idx := dev.Attrs().Index
	for _, p := range peers {
		if p.PodCIDR == nil || p.UnderlayIP.To4() == nil || len(p.VTEPMAC) != 6 {
			return ch, fmt.Errorf("peer %s is incomplete: pod CIDR %v, underlay %v, mac %v", p.Name, p.PodCIDR, p.UnderlayIP, p.VTEPMAC)
		}
	}
	if err := syncRoutes(cfg, idx, peers, &ch); err != nil {
		return ch, err
	}
	if err := syncNeighbours(cfg, idx, peers, &ch); err != nil {
		return ch, err
	}
	if err := syncFDB(cfg, idx, peers, &ch); err != nil {
		return ch, err
	}
	return ch, nil
}

// RemoveRoutes deletes every route drover installed (direct routes on the
// underlay included); for uninstall.
func RemoveRoutes() error {
	var ch Changes
	return syncRoutes(Config{}, -1, nil, &ch)
}
