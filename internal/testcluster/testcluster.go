// Package testcluster builds, for tests, a cluster of network namespaces on
// one machine: an underlay namespace holding a bridge (the L2 segment the
// nodes share) and node namespaces each wired to it by a veth named eth0.
// Everything is removed by t.Cleanup. It is for tests only.
package testcluster

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/testns"
)

// UnderlayBridge is the bridge inside the underlay namespace.
const UnderlayBridge = "ul0"

// Underlay is the shared segment. Its addresses come from TEST-NET-2
// (198.51.100.0/24), inside namespaces the tests own.
type Underlay struct {
	NS     ns.NetNS
	Subnet *net.IPNet
	nodes  int
}

// Node is one node namespace on the underlay.
type Node struct {
	Name string
	NS   ns.NetNS
	IP   net.IP // on eth0
}

// NewUnderlay creates the underlay namespace and its bridge.
func NewUnderlay(t testing.TB) *Underlay {
	t.Helper()
	u := &Underlay{NS: testns.New(t)}
	_, u.Subnet, _ = net.ParseCIDR("198.51.100.0/24")
	err := u.NS.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: UnderlayBridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	if err != nil {
		t.Fatalf("create underlay bridge: %v", err)
	}
	return u
}

// AddNode creates a node namespace with eth0 on the underlay, the next free
// underlay address, and a default route via the underlay's .1 (unused
// unless a test adds an "internet" there).
func (u *Underlay) AddNode(t testing.TB, name string) *Node {
	t.Helper()
	u.nodes++
	return u.AddHost(t, name, net.IPv4(198, 51, 100, byte(10+u.nodes)).To4())
}

// AddHost is AddNode with a chosen address, for hosts that are not nodes
// (a control plane, an "internet"). Addresses below .10 are free for it.
func (u *Underlay) AddHost(t testing.TB, name string, ip net.IP) *Node {
	t.Helper()
	n := &Node{Name: name, NS: testns.New(t), IP: ip.To4()}
	peer := fmt.Sprintf("ul-%d", ip.To4()[3])
	err := u.NS.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: peer},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(int(n.NS.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		br, err := netlink.LinkByName(UnderlayBridge)
		if err != nil {
			return err
		}
		l, err := netlink.LinkByName(peer)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatalf("wire node %s to the underlay: %v", name, err)
	}
	err = n.NS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr := &net.IPNet{IP: n.IP, Mask: u.Subnet.Mask}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: addr}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IPv4(198, 51, 100, 1)})
	})
	if err != nil {
		t.Fatalf("address node %s: %v", name, err)
	}
	return n
}

// Exec runs a command inside a namespace and returns its combined output.
func Exec(n ns.NetNS, name string, args ...string) (string, error) {
	var out []byte
	err := n.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	return string(out), err
}

// Ping sends count pings from inside n to ip and reports an error naming the
// output unless all were answered.
func Ping(n ns.NetNS, ip net.IP, count int) error {
	out, err := Exec(n, "ping", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "2", ip.String())
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d received", count)) {
		return fmt.Errorf("ping %s: %v\n%s", ip, err, out)
	}
	return nil
}

// Eventually calls cond every interval until it returns nil, and fails the
// test with cond's last error once within has passed.
func Eventually(t testing.TB, within, interval time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", within, err)
		}
		time.Sleep(interval)
	}
}
