package datapath

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrMismatch says an attachment exists but differs from what was set up.
var ErrMismatch = errors.New("attachment differs from its setup")

// Expect is what CHECK compares a live attachment against.
type Expect struct {
	Bridge    string
	NetNSPath string
	IfName    string
	HostVeth  string
	MAC       string // pod end; empty: not compared
	Addrs     []*net.IPNet
	Routes    []*net.IPNet // destinations
	Gateways  []net.IP     // gateway per route, nil for on-link
}

// CheckPod verifies the host veth is on the bridge and up, and the pod end
// has its MAC, addresses and routes. It returns ErrNetNSNotFound,
// ErrLinkNotFound or ErrMismatch, wrapped with what differs.
func CheckPod(e Expect) error {
	// The namespace first: when it is gone the veth pair died with it, and
	// "container gone" is the answer the runtime can act on.
	podNS, err := OpenNetNS(e.NetNSPath)
	if err != nil {
		return err
	}
	defer podNS.Close()
	h, err := hostHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	hl, err := h.LinkByName(e.HostVeth)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("host veth %s: %w", e.HostVeth, ErrLinkNotFound)
		}
		return fmt.Errorf("look up host veth %s: %w", e.HostVeth, err)
	}
	br, err := bridgeByName(h, e.Bridge)
	if err != nil {
		return err
	}
	if hl.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("host veth %s is not on bridge %s: %w", e.HostVeth, e.Bridge, ErrMismatch)
	}
	if hl.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down: %w", e.HostVeth, ErrMismatch)
	}

	ph, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", e.NetNSPath, err)
	}
	defer ph.Close()
	pl, err := ph.LinkByName(e.IfName)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%s in %s: %w", e.IfName, e.NetNSPath, ErrLinkNotFound)
		}
		return fmt.Errorf("look up %s in %s: %w", e.IfName, e.NetNSPath, err)
	}
	if _, ok := pl.(*netlink.Veth); !ok {
		return fmt.Errorf("%s is a %s, not a veth: %w", e.IfName, pl.Type(), ErrMismatch)
	}
	if e.MAC != "" && pl.Attrs().HardwareAddr.String() != e.MAC {
		return fmt.Errorf("%s has MAC %s, expected %s: %w", e.IfName, pl.Attrs().HardwareAddr, e.MAC, ErrMismatch)
	}
	addrs, err := ph.AddrList(pl, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", e.IfName, err)
	}
	for _, want := range e.Addrs {
		found := false
		for _, a := range addrs {
			if a.IPNet.String() == want.String() {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s lacks address %s: %w", e.IfName, want, ErrMismatch)
		}
	}
	routes, err := ph.RouteList(pl, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", e.IfName, err)
	}
	for i, dst := range e.Routes {
		found := false
		for _, r := range routes {
			rdst := r.Dst
			if rdst == nil {
				rdst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
			}
			if rdst.String() == dst.String() && (e.Gateways[i] == nil || r.Gw.Equal(e.Gateways[i])) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s lacks route to %s via %v: %w", e.IfName, dst, e.Gateways[i], ErrMismatch)
		}
	}
	return nil
}
