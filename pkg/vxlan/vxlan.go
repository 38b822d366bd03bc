// Package vxlan manages a node's one VXLAN device (drover.vxlan): created
// with learning off and no default destination, so the kernel never floods
// or learns; every remote VTEP is programmed explicitly by pkg/overlay. It
// does not know about peers.
package vxlan

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// DefaultName is the device name; DefaultPort the IANA VXLAN port.
const (
	DefaultName = "drover.vxlan"
	DefaultPort = 4789
	DefaultVNI  = 1
	// Overhead is what VXLAN over IPv4 adds to a frame: outer IPv4 (20),
	// UDP (8), VXLAN (8) and inner Ethernet (14) headers.
	Overhead = 50
)

// ErrNotFound says the device does not exist.
var ErrNotFound = errors.New("vxlan device not found")

// Config is the wanted shape of the device.
type Config struct {
	Name     string
	VNI      int
	Port     int
	LocalIP  net.IP // underlay source address
	Underlay int    // underlay link index
	MTU      int    // 0: underlay MTU - Overhead
	MAC      net.HardwareAddr
	Addr     *net.IPNet // the VTEP address, /32
}

// MACForNode derives a node's VTEP MAC from its name: locally administered,
// unicast, and the same across agent restarts and node reboots, so peers'
// neighbour and FDB entries never go stale because an agent restarted.
func MACForNode(node string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("drover-vtep/" + node))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// Ensure creates the device or brings an existing one to cfg. Attributes the
// kernel cannot change in place (VNI, port, local address, underlay link)
// are fixed by replacing the device; the rest (MTU, MAC, address, up) in
// place, writing only what differs, so an agent restart flaps nothing.
func Ensure(cfg Config) (*netlink.Vxlan, error) {
	vx, _, err := Reconcile(cfg)
	return vx, err
}

// Reconcile is Ensure that also reports how many kernel writes it made
// (device created or replaced, MTU, MAC, address, up): zero when the device
// was already as wanted, which is how a restarted agent shows it adopted
// the device instead of rebuilding it.
func Reconcile(cfg Config) (*netlink.Vxlan, int, error) {
	writes := 0
	if cfg.MTU == 0 {
		ul, err := netlink.LinkByIndex(cfg.Underlay)
		if err != nil {
			return nil, writes, fmt.Errorf("underlay link %d: %w", cfg.Underlay, err)
		}
		cfg.MTU = ul.Attrs().MTU - Overhead
	}
	cur, err := Get(cfg.Name)
	if err == nil && !compatible(cur, cfg) {
		if err := netlink.LinkDel(cur); err != nil {
			return nil, writes, fmt.Errorf("replace %s with new VXLAN parameters: %w", cfg.Name, err)
		}
		writes++
		err = ErrNotFound
	}
	if errors.Is(err, ErrNotFound) {
		cur, err = create(cfg)
		writes++
	}
	if err != nil {
		return nil, writes, err
	}
	if cur.MTU != cfg.MTU {
		if err := netlink.LinkSetMTU(cur, cfg.MTU); err != nil {
			return nil, writes, fmt.Errorf("set %s mtu %d: %w", cfg.Name, cfg.MTU, err)
		}
		writes++
	}
	if cur.HardwareAddr.String() != cfg.MAC.String() {
		if err := netlink.LinkSetHardwareAddr(cur, cfg.MAC); err != nil {
			return nil, writes, fmt.Errorf("set %s mac: %w", cfg.Name, err)
		}
		writes++
	}
	w, err := ensureOnlyAddr(cur, cfg.Addr)
	writes += w
	if err != nil {
		return nil, writes, err
	}
	if cur.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(cur); err != nil {
			return nil, writes, fmt.Errorf("set %s up: %w", cfg.Name, err)
		}
		writes++
	}
	vx, err := Get(cfg.Name)
	return vx, writes, err
}

// Get returns the device, or ErrNotFound.
func Get(name string) (*netlink.Vxlan, error) {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		var lnf netlink.LinkNotFoundError
		if errors.As(err, &lnf) {
			return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return nil, fmt.Errorf("link %s exists but is a %s, not a vxlan device", name, l.Type())
	}
	return vx, nil
}

func compatible(cur *netlink.Vxlan, cfg Config) bool {
	return cur.VxlanId == cfg.VNI && cur.Port == cfg.Port && cur.SrcAddr.Equal(cfg.LocalIP) &&
		cur.VtepDevIndex == cfg.Underlay && !cur.Learning
}

func create(cfg Config) (*netlink.Vxlan, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = cfg.Name
	attrs.MTU = cfg.MTU
	attrs.HardwareAddr = cfg.MAC
	vx := &netlink.Vxlan{
		LinkAttrs:    attrs,
		VxlanId:      cfg.VNI,
		VtepDevIndex: cfg.Underlay,
		SrcAddr:      cfg.LocalIP,
		Port:         cfg.Port,
		Learning:     false,
	}
	if err := netlink.LinkAdd(vx); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("create vxlan device %s (vni %d, port %d): %w", cfg.Name, cfg.VNI, cfg.Port, err)
	}
	return Get(cfg.Name)
}

// ensureOnlyAddr leaves exactly want on the device: a stale VTEP address (the
// node's pod CIDR changed) would attract traffic for a subnet it no longer
// owns. It returns the number of writes.
func ensureOnlyAddr(l netlink.Link, want *net.IPNet) (int, error) {
	writes := 0
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return writes, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	have := false
	for _, a := range addrs {
		if a.IPNet.String() == want.String() {
			have = true
			continue
		}
		if err := netlink.AddrDel(l, &a); err != nil {
			return writes, fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, l.Attrs().Name, err)
		}
		writes++
	}
	if have {
		return writes, nil
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: want}); err != nil && !errors.Is(err, syscall.EEXIST) {
		return writes, fmt.Errorf("add %s to %s: %w", want, l.Attrs().Name, err)
	}
	return writes + 1, nil
}

// Delete removes the device, and with it every neighbour and FDB entry and
// every route through it. A missing device is not an error; for uninstall.
func Delete(name string) error {
	vx, err := Get(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := netlink.LinkDel(vx); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
