package cni_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/cnirig"
)

const (
	hostPort      = 18080
	containerPort = 8080
	// bandwidth as kubelet passes it: bits per second, burst MaxInt32.
	rateBits  = 100_000_000
	burstBits = 2147483647
)

// TestChainThroughRealClients runs drover chained with the reference portmap
// and bandwidth plugins through each real client: the attachment a runtime
// gets is reachable, port-mapped, shaped and checkable, and DEL then GC
// leave nothing behind.
func TestChainThroughRealClients(t *testing.T) {
	requireRefPlugins(t)
	for _, c := range []client{libcniClient{}, cnitoolClient{}} {
		t.Run("pods reach each other, the gateway and a host port, and DEL then GC leave nothing, through "+c.name(), func(t *testing.T) {
			t.Parallel()
			testChain(t, c)
		})
	}
}

func testChain(t *testing.T, c client) {
	n := newNode(t, "10.244.1.0/24")
	n.chain(t, "1.1.0", cnirig.Portmap(), cnirig.Bandwidth())
	outside := uplink(t, n)

	a, b := newPod(t, "pod-a"), newPod(t, "pod-b")
	a.caps = map[string]any{
		"portMappings": []map[string]any{{"hostPort": hostPort, "containerPort": containerPort, "protocol": "tcp"}},
		"bandwidth": map[string]any{
			"ingressRate": rateBits, "ingressBurst": burstBits,
			"egressRate": rateBits, "egressBurst": burstBits,
		},
	}
	a.id, b.id = c.containerID(a), c.containerID(b)

	if err := c.status(t, n); err != nil {
		t.Fatalf("STATUS before any pod: %v", err)
	}
	resA, err := c.add(t, n, a)
	if err != nil {
		t.Fatalf("ADD pod A: %v", err)
	}
	resB, err := c.add(t, n, b)
	if err != nil {
		t.Fatalf("ADD pod B: %v", err)
	}
	ipA := requireAttachment(t, n, a, resA)
	ipB := requireAttachment(t, n, b, resB)
	if ipA.Equal(ipB) {
		t.Fatalf("both pods got %s", ipA)
	}

	for _, p := range []struct {
		name string
		from ns.NetNS
		to   net.IP
	}{
		{"pod A reaches pod B", a.ns, ipB},
		{"pod B reaches pod A", b.ns, ipA},
		{"pod A reaches the gateway", a.ns, n.gateway},
		{"pod B reaches the gateway", b.ns, n.gateway},
		{"the node reaches pod A", n.ns, ipA},
	} {
		if err := ping(p.from, p.to); err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	}

	// Pod B to a host port of the node is left out on purpose: the reply
	// would go pod to pod across the bridge without un-DNAT, which needs
	// br_netfilter, a machine-wide switch.
	serveOnce(t, a.ns, containerPort, "hello from pod A")
	for _, p := range []struct {
		name string
		from ns.NetNS
		addr string
	}{
		{"a client outside the node reaches pod A on the node's address", outside, fmt.Sprintf("%s:%d", uplinkNodeIP, hostPort)},
		{"the node reaches pod A on the gateway address", n.ns, fmt.Sprintf("%s:%d", n.gateway, hostPort)},
		{"pod A reaches itself through its host port (hairpin)", a.ns, fmt.Sprintf("%s:%d", n.gateway, hostPort)},
	} {
		got, err := dialRead(p.from, p.addr)
		if err != nil || got != "hello from pod A" {
			t.Errorf("%s: got %q, %v", p.name, got, err)
		}
	}
	nat := n.natRules(t)
	if !strings.Contains(nat, ":CNI-DN-") || !strings.Contains(nat, ipA.String()) {
		t.Errorf("portmap's DNAT chain for pod A is missing from the node's nat table:\n%s", nat)
	}
	requireShaped(t, n, resA)

	for _, p := range []*pod{a, b} {
		if err := c.check(t, n, p); err != nil {
			t.Errorf("CHECK %s: %v", p.id, err)
		}
	}
	if err := c.status(t, n); err != nil {
		t.Errorf("STATUS with two pods: %v", err)
	}

	for _, p := range []*pod{a, b} {
		if err := c.del(t, n, p); err != nil {
			t.Fatalf("DEL %s: %v", p.id, err)
		}
	}
	if err := c.del(t, n, a); err != nil {
		t.Errorf("a second DEL of pod A fails: %v", err)
	}
	if err := c.gc(t, n, nil); err != nil {
		t.Fatalf("GC: %v", err)
	}
	n.requireClean(t, "DEL and GC")
	if nat := n.natRules(t); strings.Contains(nat, "CNI-DN-") {
		t.Errorf("portmap's per-pod chain survives DEL:\n%s", nat)
	}
	if got := podAddrs(t, a); len(got) > 0 {
		t.Errorf("pod A still has %v on %s after DEL", got, a.ifName)
	}
}

// requireAttachment checks the result a runtime got against the contract and
// against what is really programmed, and returns the pod's address.
func requireAttachment(t *testing.T, n *node, p *pod, res *current.Result) net.IP {
	t.Helper()
	if len(res.Interfaces) < 2 {
		t.Fatalf("result has %d interfaces, want the host veth then %s: %+v", len(res.Interfaces), p.ifName, res)
	}
	host, podIf := res.Interfaces[0], res.Interfaces[1]
	if !strings.HasPrefix(host.Name, "drv") || len(host.Name) != 14 || host.Sandbox != "" {
		t.Errorf("interfaces[0] = %+v, want the host veth drv<11 hex> with no sandbox", host)
	}
	if podIf.Name != p.ifName || podIf.Sandbox != p.ns.Path() {
		t.Errorf("interfaces[1] = %+v, want %s in sandbox %s", podIf, p.ifName, p.ns.Path())
	}
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d ips, want 1: %+v", len(res.IPs), res.IPs)
	}
	ipc := res.IPs[0]
	if ipc.Interface == nil || *ipc.Interface != 1 || !ipc.Gateway.Equal(n.gateway) || !n.podCIDR.Contains(ipc.Address.IP) {
		t.Errorf("ips[0] = %s, want an address of %s on interface 1 with gateway %s", ipc, n.podCIDR, n.gateway)
	}
	if ipc.Address.IP.Equal(n.gateway) {
		t.Errorf("pod got the gateway address %s", n.gateway)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || !res.Routes[0].GW.Equal(n.gateway) {
		t.Errorf("routes = %v, want 0.0.0.0/0 via %s", res.Routes, n.gateway)
	}

	if got := podAddrs(t, p); len(got) != 1 || got[0] != ipc.Address.IP.String() {
		t.Errorf("pod %s has %v on %s, the result says %s", p.id, got, p.ifName, ipc.Address.IP)
	}
	var held []string
	for _, a := range n.allocations(t) {
		if a.containerID == p.id && a.ifName == p.ifName {
			held = append(held, a.ip)
		}
	}
	if len(held) != 1 || held[0] != ipc.Address.IP.String() {
		t.Errorf("store records %v for %s, the result says %s", held, p.id, ipc.Address.IP)
	}

	err := n.do(t, func() error {
		br, err := netlink.LinkByName("drover0")
		if err != nil {
			return fmt.Errorf("bridge drover0: %w", err)
		}
		addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || !addrs[0].IP.Equal(n.gateway) {
			return fmt.Errorf("drover0 has %v, want the gateway %s", addrs, n.gateway)
		}
		hl, err := netlink.LinkByName(host.Name)
		if err != nil {
			return fmt.Errorf("host veth %s: %w", host.Name, err)
		}
		if hl.Attrs().MasterIndex != br.Attrs().Index {
			return fmt.Errorf("host veth %s is not on drover0", host.Name)
		}
		pi, err := netlink.LinkGetProtinfo(hl)
		if err != nil {
			return fmt.Errorf("bridge port info of %s: %w", host.Name, err)
		}
		if !pi.Hairpin {
			return fmt.Errorf("hairpin is off on %s", host.Name)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	return ipc.Address.IP
}

// requireShaped checks bandwidth's work on the node: a tbf on the host veth
// (traffic into the pod) and an ifb of its own (traffic out of it).
func requireShaped(t *testing.T, n *node, res *current.Result) {
	t.Helper()
	err := n.do(t, func() error {
		hl, err := netlink.LinkByName(res.Interfaces[0].Name)
		if err != nil {
			return err
		}
		qds, err := netlink.QdiscList(hl)
		if err != nil {
			return err
		}
		for _, q := range qds {
			if q.Type() == "tbf" {
				return nil
			}
		}
		return fmt.Errorf("no tbf qdisc on the host veth %s: %v", hl.Attrs().Name, qds)
	})
	if err != nil {
		t.Errorf("bandwidth did not shape pod A: %v", err)
	}
	if ifb := linkNames(t, n.ns, "bwp"); len(ifb) != 1 {
		t.Errorf("want bandwidth's one ifb device on the node, have %v", ifb)
	}
}

const (
	uplinkNodeIP   = "192.0.2.1"
	uplinkClientIP = "192.0.2.2"
)

// uplink gives the node an "outside": a namespace joined to it by a veth on
// a documentation subnet, from where traffic to a host port enters the node
// through PREROUTING, as a client's would.
func uplink(t *testing.T, n *node) ns.NetNS {
	t.Helper()
	outside := newNS(t)
	err := n.do(t, func() error {
		la := netlink.NewLinkAttrs()
		la.Name = "uplink0"
		veth := &netlink.Veth{LinkAttrs: la, PeerName: "uplink0", PeerNamespace: netlink.NsFd(int(outside.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create uplink veth: %w", err)
		}
		return addrUp("uplink0", uplinkNodeIP+"/24")
	})
	if err == nil {
		err = outside.Do(func(ns.NetNS) error { return addrUp("uplink0", uplinkClientIP+"/24") })
	}
	if err != nil {
		t.Fatal(err)
	}
	return outside
}

func addrUp(name, cidr string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("address %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
