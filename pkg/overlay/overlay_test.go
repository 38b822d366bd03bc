package overlay_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/datapath"
	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

// rig is a node with a VXLAN device, a bridge and one pod.
type rig struct {
	node  *testcluster.Node
	cidr  *net.IPNet
	mac   net.HardwareAddr
	pod   ns.NetNS
	podIP net.IP
	cfg   overlay.Config
}

func (r *rig) peer() overlay.Peer {
	return overlay.Peer{Name: r.node.Name, PodCIDR: r.cidr, VTEPMAC: r.mac, UnderlayIP: r.node.IP}
}

func newRigs(t *testing.T, n int, direct bool) []*rig {
	t.Helper()
	u := testcluster.NewUnderlay(t)
	var rigs []*rig
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("node-%d", i)
		r := &rig{node: u.AddNode(t, name), mac: vxlan.MACForNode(name), pod: testns.New(t)}
		_, r.cidr, _ = net.ParseCIDR(fmt.Sprintf("10.244.%d.0/24", i+1))
		r.podIP = net.IPv4(10, 244, byte(i+1), 2).To4()
		err := r.node.NS.Do(func(ns.NetNS) error {
			if err := datapath.EnableIPv4Forwarding(); err != nil {
				return err
			}
			eth0, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			if _, err := vxlan.Ensure(vxlan.Config{
				Name: vxlan.DefaultName, VNI: 1, Port: vxlan.DefaultPort, LocalIP: r.node.IP,
				Underlay: eth0.Attrs().Index, MAC: r.mac,
				Addr: &net.IPNet{IP: overlay.VTEPAddr(r.cidr), Mask: net.CIDRMask(32, 32)},
			}); err != nil {
				return err
			}
			gw := &net.IPNet{IP: net.IPv4(10, 244, byte(i+1), 1).To4(), Mask: r.cidr.Mask}
			br, err := datapath.EnsureBridge(datapath.BridgeConfig{Name: "drover0", Gateway: gw, MTU: 1450})
			if err != nil {
				return err
			}
			_, _, err = datapath.SetupPod(br, datapath.Pod{
				NetNSPath: r.pod.Path(), IfName: "eth0", HostVeth: datapath.HostVethName(name, "eth0"),
				MTU: 1450, Addr: &net.IPNet{IP: r.podIP, Mask: r.cidr.Mask}, Gateway: gw.IP,
			})
			r.cfg = overlay.Config{Device: vxlan.DefaultName, Underlay: eth0.Attrs().Index, DirectRouting: direct,
				UnderlayNet: &net.IPNet{IP: r.node.IP.Mask(net.CIDRMask(24, 32)), Mask: net.CIDRMask(24, 32)}}
			return err
		})
		if err != nil {
			t.Fatalf("set up %s: %v", name, err)
		}
		rigs = append(rigs, r)
	}
	return rigs
}

func syncAll(t *testing.T, rigs []*rig) []overlay.Changes {
	t.Helper()
	var all []overlay.Changes
	for _, r := range rigs {
		var peers []overlay.Peer
		for _, o := range rigs {
			if o != r {
				peers = append(peers, o.peer())
			}
		}
		all = append(all, syncOne(t, r, peers))
	}
	return all
}

func syncOne(t *testing.T, r *rig, peers []overlay.Peer) overlay.Changes {
	t.Helper()
	var ch overlay.Changes
	err := r.node.NS.Do(func(ns.NetNS) error {
		var err error
		ch, err = overlay.Sync(r.cfg, peers)
		return err
	})
	if err != nil {
		t.Fatalf("sync %s: %v", r.node.Name, err)
	}
	return ch
}

func pingAll(t *testing.T, rigs []*rig) {
	t.Helper()
	for _, a := range rigs {
		for _, b := range rigs {
			if a != b {
				if err := testcluster.Ping(a.pod, b.podIP, 1); err != nil {
					t.Fatalf("pod on %s -> pod on %s: %v", a.node.Name, b.node.Name, err)
				}
			}
		}
	}
}

func TestPodsOnThreeNodesReachEachOtherThroughVXLAN(t *testing.T) {
	rigs := newRigs(t, 3, false)
	for _, ch := range syncAll(t, rigs) {
		if ch.RoutesSet != 2 || ch.NeighSet != 2 || ch.FDBSet != 2 {
			t.Fatalf("first sync wrote %+v, want 2 routes, 2 neighbours, 2 FDB entries", ch)
		}
	}
	pingAll(t, rigs)
	for _, ch := range syncAll(t, rigs) {
		if ch.Total() != 0 {
			t.Fatalf("a second sync with nothing changed wrote %+v", ch)
		}
	}
}

func TestSyncRepairsHandDeletedEntries(t *testing.T) {
	rigs := newRigs(t, 2, false)
	syncAll(t, rigs)
	r, peer := rigs[0], rigs[1].peer()
	for _, tc := range []struct {
		name   string
		tamper func(dev netlink.Link) error
		want   overlay.Changes
	}{
		{"a deleted route comes back", func(dev netlink.Link) error {
			return netlink.RouteDel(&netlink.Route{Dst: peer.PodCIDR, LinkIndex: dev.Attrs().Index})
		}, overlay.Changes{RoutesSet: 1}},
		{"a deleted neighbour comes back", func(dev netlink.Link) error {
			return netlink.NeighDel(&netlink.Neigh{LinkIndex: dev.Attrs().Index, IP: overlay.VTEPAddr(peer.PodCIDR)})
		}, overlay.Changes{NeighSet: 1}},
		{"a deleted FDB entry comes back", func(dev netlink.Link) error {
			return netlink.NeighDel(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, HardwareAddr: peer.VTEPMAC, IP: peer.UnderlayIP})
		}, overlay.Changes{FDBSet: 1}},
		{"a wrong FDB destination is corrected", func(dev netlink.Link) error {
			return netlink.NeighSet(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: peer.VTEPMAC, IP: net.IPv4(198, 51, 100, 99)})
		}, overlay.Changes{FDBSet: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := r.node.NS.Do(func(ns.NetNS) error {
				dev, err := netlink.LinkByName(vxlan.DefaultName)
				if err != nil {
					return err
				}
				return tc.tamper(dev)
			})
			if err != nil {
				t.Fatalf("tamper: %v", err)
			}
			if err := testcluster.Ping(r.pod, rigs[1].podIP, 1); err == nil && tc.want.FDBSet == 0 && tc.want.NeighSet == 0 {
				t.Fatal("pods still talk with the route deleted: the test tampers with nothing")
			}
			ch := syncOne(t, r, []overlay.Peer{peer})
			if ch.RoutesSet != tc.want.RoutesSet || ch.NeighSet != tc.want.NeighSet || ch.FDBSet < tc.want.FDBSet {
				t.Fatalf("repair wrote %+v, want %+v", ch, tc.want)
			}
			pingAll(t, rigs)
		})
	}
}

func TestADepartedPeerLeavesNothingBehind(t *testing.T) {
	rigs := newRigs(t, 3, false)
	syncAll(t, rigs)
	r := rigs[0]
	ch := syncOne(t, r, []overlay.Peer{rigs[1].peer()})
	if ch.RoutesDeleted != 1 || ch.NeighDeleted != 1 || ch.FDBDeleted != 1 {
		t.Fatalf("removing a peer wrote %+v, want one route, neighbour and FDB entry deleted", ch)
	}
	err := r.node.NS.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		for _, rt := range rs {
			if rt.Dst.String() == rigs[2].cidr.String() {
				return fmt.Errorf("route to the departed peer %s survived", rt.Dst)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := testcluster.Ping(r.pod, rigs[1].podIP, 1); err != nil {
		t.Fatalf("the remaining peer is unreachable: %v", err)
	}
}

func TestDirectRoutingSkipsEncapsulationOnTheSameSubnet(t *testing.T) {
	rigs := newRigs(t, 2, true)
	for _, ch := range syncAll(t, rigs) {
		if ch.RoutesSet != 1 || ch.NeighSet != 0 || ch.FDBSet != 0 {
			t.Fatalf("direct routing sync wrote %+v, want one route and no VXLAN entries", ch)
		}
	}
	pingAll(t, rigs)
	err := rigs[0].node.NS.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteGet(rigs[1].podIP)
		if err != nil {
			return err
		}
		if rs[0].Gw.String() != rigs[1].node.IP.String() {
			return fmt.Errorf("route to %s goes via %v, want the peer's underlay address %s", rigs[1].podIP, rs[0].Gw, rigs[1].node.IP)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// kernelEntries is what node r holds for its peers: drover routes
// ("dst via gw"), neighbours ("ip mac") and FDB entries ("mac dst") of the
// VXLAN device.
func kernelEntries(t *testing.T, r *rig) (routes, neighs, fdb []string) {
	t.Helper()
	err := r.node.NS.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		for _, rt := range rs {
			routes = append(routes, rt.Dst.String()+" via "+rt.Gw.String())
		}
		dev, err := netlink.LinkByName(vxlan.DefaultName)
		if err != nil {
			return err
		}
		ns4, err := netlink.NeighList(dev.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, n := range ns4 {
			neighs = append(neighs, n.IP.String()+" "+n.HardwareAddr.String())
		}
		br, err := netlink.NeighList(dev.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, n := range br {
			if n.IP != nil {
				fdb = append(fdb, n.HardwareAddr.String()+" "+n.IP.String())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return routes, neighs, fdb
}

func TestAChangedPeerIsReplacedAndLeavesNothingStale(t *testing.T) {
	rigs := newRigs(t, 2, false)
	syncAll(t, rigs)
	r := rigs[0]
	base := rigs[1].peer()
	_, movedCIDR, _ := net.ParseCIDR("10.244.42.0/24")
	newMAC, _ := net.ParseMAC("0a:42:42:42:42:42")
	for _, tc := range []struct {
		name   string
		change func(p *overlay.Peer)
	}{
		{"a new underlay address", func(p *overlay.Peer) { p.UnderlayIP = net.IPv4(198, 51, 100, 77).To4() }},
		{"a new VTEP MAC", func(p *overlay.Peer) { p.VTEPMAC = newMAC }},
		{"a new pod CIDR", func(p *overlay.Peer) { p.PodCIDR = movedCIDR }},
		{"all three at once", func(p *overlay.Peer) {
			p.UnderlayIP, p.VTEPMAC, p.PodCIDR = net.IPv4(198, 51, 100, 78).To4(), newMAC, movedCIDR
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// From the original peer each time, so every case is one change.
			syncOne(t, r, []overlay.Peer{base})
			p := base
			tc.change(&p)
			syncOne(t, r, []overlay.Peer{p})
			routes, neighs, fdb := kernelEntries(t, r)
			vtep := overlay.VTEPAddr(p.PodCIDR).String()
			wantRoutes := []string{p.PodCIDR.String() + " via " + vtep}
			wantNeighs := []string{vtep + " " + p.VTEPMAC.String()}
			wantFDB := []string{p.VTEPMAC.String() + " " + p.UnderlayIP.String()}
			if fmt.Sprint(routes) != fmt.Sprint(wantRoutes) || fmt.Sprint(neighs) != fmt.Sprint(wantNeighs) || fmt.Sprint(fdb) != fmt.Sprint(wantFDB) {
				t.Fatalf("kernel holds\n routes %v\n neighbours %v\n FDB %v\nwant exactly\n routes %v\n neighbours %v\n FDB %v",
					routes, neighs, fdb, wantRoutes, wantNeighs, wantFDB)
			}
			if ch := syncOne(t, r, []overlay.Peer{p}); ch.Total() != 0 {
				t.Fatalf("a second sync of the changed peer wrote %+v", ch)
			}
		})
	}
	// Back to the real peer: the pods talk again.
	syncOne(t, r, []overlay.Peer{base})
	pingAll(t, rigs)
}
