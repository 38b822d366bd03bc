// Package datapath programs a node's pod-facing links with netlink: the
// drover0 bridge that holds the gateway address, and one veth pair per pod
// attachment. It knows nothing of CNI, IPAM or the overlay; callers give it
// addresses and names.
//
// Pod namespaces are programmed through a netlink handle opened inside them,
// so no goroutine of the caller ever changes namespace.
package datapath

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// ErrLinkNotFound says a link is already gone; DEL and GC treat it as done.
var ErrLinkNotFound = errors.New("link not found")

// BridgeConfig describes the node bridge.
type BridgeConfig struct {
	Name    string
	Gateway *net.IPNet // gateway address with the pod CIDR's prefix length
	MTU     int
}

// EnsureBridge creates the bridge if it is missing, gives it the gateway
// address and brings it up. It is safe to call from many processes at once.
func EnsureBridge(cfg BridgeConfig) (*netlink.Bridge, error) {
	br, err := bridgeByName(cfg.Name)
	if errors.Is(err, ErrLinkNotFound) {
		br, err = createBridge(cfg)
	}
	if err != nil {
		return nil, err
	}
	if err := ensureAddr(br, cfg.Gateway); err != nil {
		return nil, err
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("set bridge %s up: %w", cfg.Name, err)
		}
	}
	return br, nil
}

func bridgeByName(name string) (*netlink.Bridge, error) {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("bridge %s: %w", name, ErrLinkNotFound)
		}
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("link %s exists but is a %s, not a bridge", name, l.Type())
	}
	return br, nil
}

func createBridge(cfg BridgeConfig) (*netlink.Bridge, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = cfg.Name
	attrs.MTU = cfg.MTU
	// A fixed MAC derived from the gateway address: a Linux bridge otherwise
	// takes the lowest MAC of its ports, so the gateway's MAC would change as
	// pods come and go and every pod's ARP entry for it would go stale.
	attrs.HardwareAddr = gatewayMAC(cfg.Gateway.IP)
	br := &netlink.Bridge{LinkAttrs: attrs}
	err := netlink.LinkAdd(br)
	if err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("create bridge %s: %w", cfg.Name, err)
	}
	// EEXIST: a concurrent ADD created it first; use theirs.
	return bridgeByName(cfg.Name)
}

// gatewayMAC is 0a:58 followed by the IPv4 address: locally administered,
// unicast, and the same on every restart for the same gateway.
func gatewayMAC(ip net.IP) net.HardwareAddr {
	ip4 := ip.To4()
	return net.HardwareAddr{0x0a, 0x58, ip4[0], ip4[1], ip4[2], ip4[3]}
}

func ensureAddr(l netlink.Link, addr *net.IPNet) error {
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IPNet.IP.Equal(addr.IP) && a.IPNet.Mask.String() == addr.Mask.String() {
			return nil
		}
	}
	err = netlink.AddrAdd(l, &netlink.Addr{IPNet: addr})
	if err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("add %s to %s: %w", addr, l.Attrs().Name, err)
	}
	return nil
}

// EnableIPv4Forwarding turns on forwarding in the caller's namespace, writing
// only when it is off.
func EnableIPv4Forwarding() error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	cur, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOENT)
}
