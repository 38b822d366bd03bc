package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func wantRoute(cfg Config, vxIndex int, p Peer) netlink.Route {
	dst := &net.IPNet{IP: p.PodCIDR.IP.To4(), Mask: p.PodCIDR.Mask}
	if cfg.Direct(p) {
		return netlink.Route{Dst: dst, Gw: p.UnderlayIP.To4(), LinkIndex: cfg.Underlay, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	}
	return netlink.Route{Dst: dst, Gw: VTEPAddr(p.PodCIDR), LinkIndex: vxIndex, Flags: int(netlink.FLAG_ONLINK), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
}

func syncRoutes(cfg Config, vxIndex int, peers []Peer, ch *Changes) error {
	have, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list drover routes: %w", err)
	}
	byDst := make(map[string]netlink.Route, len(have))
	for _, r := range have {
		if r.Dst != nil {
			byDst[r.Dst.String()] = r
		}
	}
	wanted := make(map[string]bool, len(peers))
	for _, p := range peers {
		w := wantRoute(cfg, vxIndex, p)
		key := w.Dst.String()
		wanted[key] = true
		if r, ok := byDst[key]; ok && r.LinkIndex == w.LinkIndex && r.Gw.Equal(w.Gw) {
			continue
		}
		if err := netlink.RouteReplace(&w); err != nil {
			return fmt.Errorf("route %s via %s for peer %s: %w", w.Dst, w.Gw, p.Name, err)
		}
		ch.RoutesSet++
	}
	for key, r := range byDst {
		if wanted[key] {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("delete stale route %s: %w", key, err)
		}
		ch.RoutesDeleted++
	}
	return nil
}

func syncNeighbours(cfg Config, vxIndex int, peers []Peer, ch *Changes) error {
	have, err := netlink.NeighList(vxIndex, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list neighbours of %s: %w", cfg.Device, err)
	}
	byIP := make(map[string]netlink.Neigh, len(have))
	for _, n := range have {
		byIP[n.IP.String()] = n
	}
	wanted := make(map[string]bool, len(peers))
	for _, p := range peers {
		if cfg.Direct(p) {
			continue
		}
		ip := VTEPAddr(p.PodCIDR)
		wanted[ip.String()] = true
		if n, ok := byIP[ip.String()]; ok && bytes.Equal(n.HardwareAddr, p.VTEPMAC) && n.State == netlink.NUD_PERMANENT {
			continue
		}
		err := netlink.NeighSet(&netlink.Neigh{
			LinkIndex:    vxIndex,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           ip,
			HardwareAddr: p.VTEPMAC,
		})
		if err != nil {
			return fmt.Errorf("neighbour %s -> %s for peer %s: %w", ip, p.VTEPMAC, p.Name, err)
		}
		ch.NeighSet++
	}
	for key, n := range byIP {
		if wanted[key] {
			continue
		}
		if err := netlink.NeighDel(&n); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("delete stale neighbour %s: %w", key, err)
		}
		ch.NeighDeleted++
	}
	return nil
}

func syncFDB(cfg Config, vxIndex int, peers []Peer, ch *Changes) error {
	have, err := netlink.NeighList(vxIndex, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list FDB of %s: %w", cfg.Device, err)
	}
	byMAC := make(map[string]netlink.Neigh, len(have))
	for _, n := range have {
		byMAC[n.HardwareAddr.String()] = n
	}
	wanted := make(map[string]bool, len(peers))
	for _, p := range peers {
		if cfg.Direct(p) {
			continue
		}
		key := p.VTEPMAC.String()
		wanted[key] = true
		if n, ok := byMAC[key]; ok && n.IP.Equal(p.UnderlayIP) {
			continue
		}
		err := netlink.NeighSet(&netlink.Neigh{
			LinkIndex:    vxIndex,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        netlink.NUD_PERMANENT,
			IP:           p.UnderlayIP.To4(),
			HardwareAddr: p.VTEPMAC,
		})
		if err != nil {
			return fmt.Errorf("FDB %s -> %s for peer %s: %w", p.VTEPMAC, p.UnderlayIP, p.Name, err)
		}
		ch.FDBSet++
	}
	for key, n := range byMAC {
		if wanted[key] {
			continue
		}
		n.Family = unix.AF_BRIDGE
		n.Flags = netlink.NTF_SELF
		if err := netlink.NeighDel(&n); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("delete stale FDB entry %s: %w", key, err)
		}
		ch.FDBDeleted++
	}
	return nil
}
