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
	"golang.org/x/sys/unix"
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
	h, err := hostHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	br, err := bridgeByName(h, cfg.Name)
	if errors.Is(err, ErrLinkNotFound) {
		br, err = createBridge(h, cfg)
	}
	if err != nil {
		return nil, err
	}
	if err := ensureAddr(h, br, cfg.Gateway); err != nil {
		return nil, err
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("set bridge %s up: %w", cfg.Name, err)
		}
	}
	return br, nil
}

// hostHandle is one netlink socket in the caller's namespace for the calls
// of one operation: the package-level netlink functions open and close a
// socket per request, which is a good part of a plugin exec's own cost.
func hostHandle() (netlinksafe.Handle, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return h, fmt.Errorf("open netlink socket: %w", err)
	}
	return h, nil
}

func bridgeByName(h netlinksafe.Handle, name string) (*netlink.Bridge, error) {
	l, err := h.LinkByName(name)
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

func createBridge(h netlinksafe.Handle, cfg BridgeConfig) (*netlink.Bridge, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = cfg.Name
	attrs.MTU = cfg.MTU
	// A fixed MAC derived from the gateway address: a Linux bridge otherwise
	// takes the lowest MAC of its ports, so the gateway's MAC would change as
	// pods come and go and every pod's ARP entry for it would go stale.
	attrs.HardwareAddr = gatewayMAC(cfg.Gateway.IP)
	br := &netlink.Bridge{LinkAttrs: attrs}
	err := h.LinkAdd(br)
	if err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("create bridge %s: %w", cfg.Name, err)
	}
	// EEXIST: a concurrent ADD created it first; use theirs.
	return bridgeByName(h, cfg.Name)
}

// gatewayMAC is 0a:58 followed by the IPv4 address: locally administered,
// unicast, and the same on every restart for the same gateway.
func gatewayMAC(ip net.IP) net.HardwareAddr {
	ip4 := ip.To4()
	return net.HardwareAddr{0x0a, 0x58, ip4[0], ip4[1], ip4[2], ip4[3]}
}

// ensureAddr adds addr to l unless l has it: the kernel answers EEXIST for
// the same address and prefix length, which is one request instead of a
// dump of the link's addresses and then maybe one.
func ensureAddr(h netlinksafe.Handle, l netlink.Link, addr *net.IPNet) error {
	err := h.AddrAdd(l, &netlink.Addr{IPNet: addr})
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
