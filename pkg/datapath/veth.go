package datapath

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// HostVethPrefix starts the name of every host-side veth drover creates.
const HostVethPrefix = "drv"

// HostVethName is the host-side veth name of one attachment: deterministic,
// so DEL and GC find the link from the container ID and interface name alone,
// even when the pod's namespace is gone.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return HostVethPrefix + hex.EncodeToString(sum[:])[:11]
}

// Pod describes one pod attachment to program.
type Pod struct {
	NetNSPath string
	IfName    string
	HostVeth  string
	MTU       int
	MAC       net.HardwareAddr // nil: kernel-chosen
	Addr      *net.IPNet
	Gateway   net.IP
	Hairpin   bool
}

// Link is what a caller reports of a link it made.
type Link struct {
	Name  string
	MAC   string
	Index int
}

// SetupPod creates the veth pair with its pod end already inside the pod
// namespace and its host end on the bridge, then addresses the pod end and
// routes the pod's default traffic through the gateway. On failure the pair
// is removed, so nothing is left half-made.
func SetupPod(br *netlink.Bridge, p Pod) (host, pod Link, err error) {
	podNS, err := netns.GetFromPath(p.NetNSPath)
	if err != nil {
		return host, pod, fmt.Errorf("open pod netns %s: %w", p.NetNSPath, err)
	}
	defer podNS.Close()
	ph, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return host, pod, fmt.Errorf("netlink handle in %s: %w", p.NetNSPath, err)
	}
	defer ph.Close()

	attrs := netlink.NewLinkAttrs()
	attrs.Name = p.HostVeth
	attrs.MTU = p.MTU
	attrs.MasterIndex = br.Attrs().Index
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         p.IfName,
		PeerMTU:          uint32(p.MTU),
		PeerHardwareAddr: p.MAC,
		PeerNamespace:    netlink.NsFd(int(podNS)),
	}
	err = netlink.LinkAdd(veth)
	if errors.Is(err, syscall.EEXIST) {
		// A host veth of this attachment survives from an ADD that was
		// killed: it is ours by name, so replace it. If the clash is the
		// pod-side name instead, the second attempt fails the same way.
		if derr := DeleteHostVeth(p.HostVeth); derr == nil {
			err = netlink.LinkAdd(veth)
		}
	}
	if err != nil {
		if errors.Is(err, syscall.EEXIST) {
			return host, pod, fmt.Errorf("create veth: interface %s already exists in the pod netns: %w", p.IfName, err)
		}
		return host, pod, fmt.Errorf("create veth %s/%s: %w", p.HostVeth, p.IfName, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = DeleteHostVeth(p.HostVeth)
		}
	}()

	hl, err := netlinksafe.LinkByName(p.HostVeth)
	if err != nil {
		return host, pod, fmt.Errorf("look up host veth %s: %w", p.HostVeth, err)
	}
	if p.Hairpin {
		if err := netlink.LinkSetHairpin(hl, true); err != nil {
			return host, pod, fmt.Errorf("set hairpin on %s: %w", p.HostVeth, err)
		}
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return host, pod, fmt.Errorf("set %s up: %w", p.HostVeth, err)
	}

	pl, err := ph.LinkByName(p.IfName)
	if err != nil {
		return host, pod, fmt.Errorf("look up %s in pod netns: %w", p.IfName, err)
	}
	if err := ph.AddrAdd(pl, &netlink.Addr{IPNet: p.Addr}); err != nil {
		return host, pod, fmt.Errorf("add %s to %s: %w", p.Addr, p.IfName, err)
	}
	if err := ph.LinkSetUp(pl); err != nil {
		return host, pod, fmt.Errorf("set %s up in pod netns: %w", p.IfName, err)
	}
	def := &netlink.Route{
		LinkIndex: pl.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        p.Gateway,
	}
	if err := ph.RouteAdd(def); err != nil {
		return host, pod, fmt.Errorf("add default route via %s in pod netns: %w", p.Gateway, err)
	}
	ok = true
	host = Link{Name: hl.Attrs().Name, MAC: hl.Attrs().HardwareAddr.String(), Index: hl.Attrs().Index}
	pod = Link{Name: pl.Attrs().Name, MAC: pl.Attrs().HardwareAddr.String(), Index: pl.Attrs().Index}
	return host, pod, nil
}

// DeleteHostVeth removes a host-side veth, which also removes its pod end.
// A link that is already gone is ErrLinkNotFound.
func DeleteHostVeth(name string) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("veth %s: %w", name, ErrLinkNotFound)
		}
		return fmt.Errorf("look up veth %s: %w", name, err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return fmt.Errorf("refuse to delete %s: it is a %s, not a veth", name, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("veth %s: %w", name, ErrLinkNotFound)
		}
		return fmt.Errorf("delete veth %s: %w", name, err)
	}
	return nil
}

// DeletePodLink removes ifName from the pod namespace at nsPath. A missing
// namespace or link is ErrLinkNotFound.
func DeletePodLink(nsPath, ifName string) error {
	podNS, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("pod netns %s: %w", nsPath, ErrLinkNotFound)
	}
	defer podNS.Close()
	ph, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", nsPath, err)
	}
	defer ph.Close()
	l, err := ph.LinkByName(ifName)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%s in %s: %w", ifName, nsPath, ErrLinkNotFound)
		}
		return fmt.Errorf("look up %s in %s: %w", ifName, nsPath, err)
	}
	if err := ph.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s in %s: %w", ifName, nsPath, err)
	}
	return nil
}

// HostVeths lists the names of drover's host-side veths in the caller's
// namespace.
func HostVeths() ([]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var names []string
	for _, l := range links {
		if isHostVeth(l) {
			names = append(names, l.Attrs().Name)
		}
	}
	return names, nil
}

// BridgePorts lists drover's host veths enslaved to the named bridge, and
// those with no master at all (left behind when a bridge was deleted). A
// missing bridge is not an error.
func BridgePorts(bridge string) ([]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	brIndex := -1
	for _, l := range links {
		if l.Attrs().Name == bridge {
			brIndex = l.Attrs().Index
		}
	}
	var names []string
	for _, l := range links {
		if !isHostVeth(l) {
			continue
		}
		if m := l.Attrs().MasterIndex; m == 0 || m == brIndex {
			names = append(names, l.Attrs().Name)
		}
	}
	return names, nil
}

func isHostVeth(l netlink.Link) bool {
	_, ok := l.(*netlink.Veth)
	name := l.Attrs().Name
	return ok && len(name) == len(HostVethPrefix)+11 && name[:len(HostVethPrefix)] == HostVethPrefix
}
