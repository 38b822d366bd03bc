package datapath

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
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

// Owner is the attachment a host veth serves. SetupPod writes it into the
// veth's alias (IFLA_IFALIAS), which is what tells one network's veths from
// another's when several drover networks share a node or a bridge: the name
// alone says only "drover".
type Owner struct {
	Network     string
	ContainerID string
	IfName      string
}

const (
	aliasPrefix = "drover/"
	// maxAlias is the longest alias the kernel keeps (IFALIASZ - 1).
	maxAlias = 255
	// maxAliasNetwork bounds the network part of an alias; a longer network
	// name is replaced by its hash, so that part always fits whole and a
	// network's veths are always found by it.
	maxAliasNetwork = 128
)

// Alias is "drover/<network>/<containerID>/<ifname>". Only the attachment
// part, there for people reading `ip link`, may be cut to fit the kernel's
// limit.
func (o Owner) Alias() string {
	a := networkAlias(o.Network) + o.ContainerID + "/" + o.IfName
	if len(a) > maxAlias {
		a = a[:maxAlias]
	}
	return a
}

// networkAlias is the prefix every alias of network's veths starts with.
func networkAlias(network string) string {
	if len(network) > maxAliasNetwork {
		sum := sha256.Sum256([]byte(network))
		network = "sha256-" + hex.EncodeToString(sum[:16])
	}
	return aliasPrefix + network + "/"
}

// ownedBy reports whether a host veth belongs to network: its alias names
// network, or it has none. A veth named after one of network's attachments
// without an alias was made by an ADD killed before it set one (the kernel
// ignores an alias given at creation, so it takes a second call), or by a
// drover that predates aliases.
func ownedBy(l netlink.Link, network string) bool {
	alias := l.Attrs().Alias
	return alias == "" || strings.HasPrefix(alias, networkAlias(network))
}

// Pod describes one pod attachment to program.
type Pod struct {
	NetNSPath string
	IfName    string
	HostVeth  string
	Owner     Owner // written into the host veth's alias; zero: no alias
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
// is removed, so nothing is left half-made; if that removal fails too, the
// error says so.
func SetupPod(br *netlink.Bridge, p Pod) (host, pod Link, err error) {
	podNS, err := OpenNetNS(p.NetNSPath)
	if err != nil {
		return host, pod, fmt.Errorf("open pod netns: %w", err)
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
		switch derr := DeleteHostVeth(p.HostVeth, p.Owner.Network); {
		case derr == nil:
			err = netlink.LinkAdd(veth)
		case errors.Is(derr, ErrLinkNotFound):
			// No host veth by that name: the clash is in the pod.
		default:
			return host, pod, fmt.Errorf("create veth: host veth %s already exists and cannot be replaced: %w", p.HostVeth, derr)
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
		if ok {
			return
		}
		// Removing the host end removes the pod end, and with it the
		// address and route given to it.
		if derr := deleteVeth(p.HostVeth); derr != nil && !errors.Is(derr, ErrLinkNotFound) {
			err = fmt.Errorf("%w; removing the half-made veth failed too: %w", err, derr)
		}
	}()

	hl, err := netlinksafe.LinkByName(p.HostVeth)
	if err != nil {
		return host, pod, fmt.Errorf("look up host veth %s: %w", p.HostVeth, err)
	}
	if p.Owner != (Owner{}) {
		if err := netlink.LinkSetAlias(hl, p.Owner.Alias()); err != nil {
			return host, pod, fmt.Errorf("set alias of %s: %w", p.HostVeth, err)
		}
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

// ErrNotOurs says a link of the name drover would use exists but belongs to
// someone else: another drover network, or not drover at all.
var ErrNotOurs = errors.New("link is not this network's")

// DeleteHostVeth removes network's host veth name, which also removes its
// pod end. A link that is already gone is ErrLinkNotFound; one that is not a
// veth, or whose alias names another network, is left alone and is
// ErrNotOurs.
func DeleteHostVeth(name, network string) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("veth %s: %w", name, ErrLinkNotFound)
		}
		return fmt.Errorf("look up veth %s: %w", name, err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return fmt.Errorf("%s is a %s, not a veth: %w", name, l.Type(), ErrNotOurs)
	}
	if !ownedBy(l, network) {
		return fmt.Errorf("veth %s has alias %q: %w", name, l.Attrs().Alias, ErrNotOurs)
	}
	return delLink(l)
}

// deleteVeth removes a veth SetupPod has just made, whatever its alias.
func deleteVeth(name string) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("veth %s: %w", name, ErrLinkNotFound)
		}
		return fmt.Errorf("look up veth %s: %w", name, err)
	}
	return delLink(l)
}

func delLink(l netlink.Link) error {
	if err := netlink.LinkDel(l); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("veth %s: %w", l.Attrs().Name, ErrLinkNotFound)
		}
		return fmt.Errorf("delete veth %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// NetworkVeths lists the host veths in the caller's namespace whose alias
// names network, on whatever bridge, or none. Veths of network without an
// alias are not listed: callers find them by the names of network's
// attachments.
func NetworkVeths(network string) ([]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	prefix := networkAlias(network)
	var names []string
	for _, l := range links {
		if isHostVeth(l) && strings.HasPrefix(l.Attrs().Alias, prefix) {
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
