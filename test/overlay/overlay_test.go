package overlay_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

// threeByTwo starts three nodes and two pods on each.
func threeByTwo(t *testing.T, c *cluster) []*pod {
	var pods []*pod
	for i := 1; i <= 3; i++ {
		n := c.start(fmt.Sprintf("node-%d", i))
		c.waitReady(n, 15*time.Second)
	}
	for i := 1; i <= 3; i++ {
		n := c.nodes[fmt.Sprintf("node-%d", i)]
		pods = append(pods, c.addPod(n), c.addPod(n))
	}
	waitRoutes(t, c, 2)
	return pods
}

// waitRoutes waits until every running node has want drover routes and,
// behind each, the rest of its peer's data path: a reconcile writes the
// routes, then the neighbours, then the FDB entries, so a route alone does
// not say that a ping through it would be answered yet.
func waitRoutes(t *testing.T, c *cluster, want int) {
	t.Helper()
	for _, n := range c.nodes {
		if n.cmd == nil {
			continue
		}
		eventually(t, 15*time.Second, func() error {
			got := droverRoutes(t, n)
			if len(got) != want {
				return fmt.Errorf("%s has routes %v, want %d", n.Name, got, want)
			}
			return peerPaths(t, c, n, got)
		})
	}
}

// peerPaths checks that each of node n's drover routes (dsts) has its
// neighbour (the peer's VTEP address to the VTEP MAC of a node of the
// cluster) and its FDB entry (that MAC to the node's underlay address).
func peerPaths(t *testing.T, c *cluster, n *node, dsts []string) error {
	t.Helper()
	underlay := map[string]string{} // VTEP MAC -> underlay address
	for _, o := range c.nodes {
		underlay[vxlan.MACForNode(o.Name).String()] = o.IP.String()
	}
	neighs := map[string]string{} // VTEP address -> MAC, permanent entries
	err := n.NS.Do(func(ns.NetNS) error {
		dev, err := netlink.LinkByName(vxlan.DefaultName)
		if err != nil {
			return err
		}
		entries, err := netlink.NeighList(dev.Attrs().Index, netlink.FAMILY_V4)
		for _, e := range entries {
			if e.State == netlink.NUD_PERMANENT {
				neighs[e.IP.String()] = e.HardwareAddr.String()
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%s neighbours: %v", n.Name, err)
	}
	fdbTo := map[string]string{} // MAC -> destination
	for _, e := range fdb(t, n) {
		mac, dst, _ := strings.Cut(e, " ")
		fdbTo[mac] = dst
	}
	for _, dst := range dsts {
		_, cidr, err := net.ParseCIDR(dst)
		if err != nil {
			return fmt.Errorf("%s route %s: %v", n.Name, dst, err)
		}
		vtep := overlay.VTEPAddr(cidr).String()
		mac, ok := neighs[vtep]
		if !ok {
			return fmt.Errorf("%s routes %s but has no neighbour for its VTEP %s yet (neighbours %v)", n.Name, dst, vtep, neighs)
		}
		if want := underlay[mac]; want == "" || fdbTo[mac] != want {
			return fmt.Errorf("%s routes %s via VTEP MAC %s, FDB sends it to %q, want the node's underlay %q", n.Name, dst, mac, fdbTo[mac], want)
		}
	}
	return nil
}

func droverRoutes(t *testing.T, n *node) []string {
	var dsts []string
	err := n.NS.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		for _, r := range rs {
			dsts = append(dsts, r.Dst.String())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return dsts
}

func pingAll(t *testing.T, pods []*pod) {
	t.Helper()
	for _, a := range pods {
		for _, b := range pods {
			if a != b {
				if err := testcluster.Ping(a.ns, b.ip, 1); err != nil {
					t.Fatalf("%s pod -> %s pod: %v", a.node.Name, b.node.Name, err)
				}
			}
		}
	}
}

func TestThreeNodesTwoPodsEveryPairPingsAndTalksTCP(t *testing.T) {
	datastores(t, testThreeNodesTwoPodsEveryPairPingsAndTalksTCP)
}

func testThreeNodesTwoPodsEveryPairPingsAndTalksTCP(t *testing.T, c *cluster) {
	pods := threeByTwo(t, c)
	for _, n := range c.nodes {
		data, err := os.ReadFile(filepath.Join(n.dir, "node.json"))
		if err != nil || !strings.Contains(string(data), `"mtu": 1450`) {
			t.Fatalf("%s node state: %s %v", n.Name, data, err)
		}
	}
	pingAll(t, pods)
	n1 := c.nodes["node-1"]
	// droverd sets its peer gauge after the pass's last FDB write, which
	// is all the pings could see: wait for what it serves.
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ok",
		"/metrics": "drover_overlay_peers 2",
	} {
		eventually(t, 10*time.Second, func() error {
			code, body, err := httpGet(n1.NS, "http://127.0.0.1:9436"+path)
			if err != nil || code != 200 || !strings.Contains(body, want) {
				return fmt.Errorf("GET %s: %d %v, body lacks %q:\n%s", path, code, err, want, tail(body, 10))
			}
			return nil
		})
	}
	// IPAM usage is sampled at each reconcile: wait for one after the ADDs.
	eventually(t, 10*time.Second, func() error {
		_, metrics, _ := httpGet(n1.NS, "http://127.0.0.1:9436/metrics")
		for _, m := range []string{"drover_reconcile_duration_seconds_count", "drover_reconcile_errors_total 0", "drover_ipam_addresses_allocated 2", "drover_ipam_addresses_capacity 253", "drover_datastore_errors_total"} {
			if !strings.Contains(metrics, m) {
				return fmt.Errorf("metrics lack %q", m)
			}
		}
		return nil
	})
	for i, p := range pods {
		serveEcho(t, p.ns, fmt.Sprintf("%s:%d", p.ip, 7000+i))
	}
	for _, a := range pods {
		for i, b := range pods {
			if a == b {
				continue
			}
			conn, err := dial(a.ns, fmt.Sprintf("%s:%d", b.ip, 7000+i))
			if err != nil {
				t.Fatalf("TCP %s -> %s: %v", a.ip, b.ip, err)
			}
			if err := roundTrip(conn, "hello across nodes\n"); err != nil {
				t.Fatalf("TCP %s -> %s: %v", a.ip, b.ip, err)
			}
			conn.Close()
		}
	}
}

func TestADeletedNodeVanishesAndAJoiningNodeIsReachable(t *testing.T) {
	datastores(t, testADeletedNodeVanishesAndAJoiningNodeIsReachable)
}

func testADeletedNodeVanishesAndAJoiningNodeIsReachable(t *testing.T, c *cluster) {
	pods := threeByTwo(t, c)

	// node-3 leaves: its record goes, as a deleted Node object would.
	c.removeNode("node-3")
	for _, name := range []string{"node-1", "node-2"} {
		n := c.nodes[name]
		eventually(t, 10*time.Second, func() error {
			for _, r := range droverRoutes(t, n) {
				if r == pods[4].ip.Mask(net.CIDRMask(24, 32)).String()+"/24" {
					return fmt.Errorf("%s still routes to the departed node: %v", name, r)
				}
			}
			return nil
		})
	}
	if err := testcluster.Ping(pods[0].ns, pods[2].ip, 1); err != nil {
		t.Fatalf("remaining nodes lost each other: %v", err)
	}

	// node-4 joins: reachable within seconds.
	joined := time.Now()
	n4 := c.start("node-4")
	c.waitReady(n4, 15*time.Second)
	p4 := c.addPod(n4)
	// Each remaining node learns of node-4 on its own watch or poll, so a
	// reply from node-2 can only come once node-2 has its route back: wait
	// for both directions to every remaining node, not for the first answer.
	for _, p := range []*pod{pods[0], pods[2]} {
		eventually(t, 10*time.Second, func() error {
			if err := testcluster.Ping(p.ns, p4.ip, 1); err != nil {
				return err
			}
			return testcluster.Ping(p4.ns, p.ip, 1)
		})
	}
	t.Logf("pods on both remaining nodes and the joining node answered each other %s after its droverd started", time.Since(joined).Round(time.Millisecond))
}

func TestRestartUnderTrafficLosesNothing(t *testing.T) {
	datastores(t, testRestartUnderTrafficLosesNothing)
}

func testRestartUnderTrafficLosesNothing(t *testing.T, c *cluster) {
	pods := threeByTwo(t, c)
	a, b := pods[0], pods[2] // node-1 -> node-2
	serveEcho(t, b.ns, fmt.Sprintf("%s:7100", b.ip))
	conn, err := dial(a.ns, fmt.Sprintf("%s:7100", b.ip))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	var sent atomic.Int64
	var streamErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := roundTrip(conn, fmt.Sprintf("message %06d\n", i)); err != nil {
				streamErr = err
				return
			}
			sent.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()

	// 10 pings a second for the whole restart.
	var pingOut []byte
	var pingErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		pingErr = a.ns.Do(func(ns.NetNS) error {
			pingOut, pingErr = exec.Command("ping", "-i", "0.1", "-c", "60", "-W", "1", b.ip.String()).CombinedOutput()
			return pingErr
		})
	}()

	time.Sleep(1500 * time.Millisecond)
	c.stop("node-1", syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)
	c.start("node-1")
	time.Sleep(1500 * time.Millisecond)
	c.stop("node-2", syscall.SIGTERM)
	c.start("node-2")
	time.Sleep(2500 * time.Millisecond)
	close(stop)
	wg.Wait()

	if streamErr != nil {
		t.Fatalf("the TCP stream broke across the restarts after %d messages: %v", sent.Load(), streamErr)
	}
	if pingErr != nil || !strings.Contains(string(pingOut), " 0% packet loss") {
		t.Fatalf("pings lost across the restarts: %v\n%s", pingErr, pingOut)
	}
	t.Logf("%d echoes and 60 pings crossed SIGKILL and SIGTERM restarts without loss", sent.Load())
	// The restarted agents adopted the data path: not one kernel write.
	// A pass adds its writes after it counts itself, so the count is read
	// once a second pass of the restarted droverd has finished.
	for _, name := range []string{"node-1", "node-2"} {
		var metrics string
		eventually(t, 20*time.Second, func() error {
			_, body, err := httpGet(c.nodes[name].NS, "http://127.0.0.1:9436/metrics")
			if err != nil {
				return fmt.Errorf("metrics of the restarted droverd on %s: %v", name, err)
			}
			if n, ok := sample(body, "drover_reconcile_duration_seconds_count"); !ok || n < 2 {
				return fmt.Errorf("the restarted droverd on %s finished %v reconciles, want 2:\n%s", name, n, grepLines(body, "drover_reconcile"))
			}
			metrics = body
			return nil
		})
		if !strings.Contains(metrics, "drover_reconcile_writes_total 0") {
			t.Errorf("restarted droverd on %s wrote to the kernel:\n%s", name, grepLines(metrics, "drover_reconcile"))
		}
	}
	if logs, _ := os.ReadFile(filepath.Join(c.nodes["node-1"].dir, "droverd.log")); strings.Count(string(logs), `"msg":"reconciled"`) > 3 {
		t.Logf("node-1 log:\n%s", tail(string(logs), 20))
	}
}

func TestHandTamperingIsRepaired(t *testing.T) { datastores(t, testHandTamperingIsRepaired) }

func testHandTamperingIsRepaired(t *testing.T, c *cluster) {
	pods := threeByTwo(t, c)
	n1, n2 := c.nodes["node-1"], c.nodes["node-2"]
	// Every case tampers with node-1's entries for node-2 and checks that
	// exactly those come back and that node-2's pods answer again.
	peerCIDR := &net.IPNet{IP: pods[2].ip.Mask(net.CIDRMask(24, 32)), Mask: net.CIDRMask(24, 32)}
	peerVTEP := overlay.VTEPAddr(peerCIDR)
	peerMAC := vxlan.MACForNode("node-2")
	vxDev := func() (netlink.Link, error) { return netlink.LinkByName(vxlan.DefaultName) }
	// fdbFor is node-1's FDB destination for node-2's VTEP MAC, or "".
	fdbFor := func() (string, error) {
		var dst string
		err := n1.NS.Do(func(ns.NetNS) error {
			dev, err := vxDev()
			if err != nil {
				return err
			}
			fdb, err := netlink.NeighList(dev.Attrs().Index, unix.AF_BRIDGE)
			for _, e := range fdb {
				if e.HardwareAddr.String() == peerMAC.String() && e.IP != nil {
					dst = e.IP.String()
				}
			}
			return err
		})
		return dst, err
	}
	neighFor := func() (string, error) {
		var mac string
		err := n1.NS.Do(func(ns.NetNS) error {
			dev, err := vxDev()
			if err != nil {
				return err
			}
			neighs, err := netlink.NeighList(dev.Attrs().Index, netlink.FAMILY_V4)
			for _, e := range neighs {
				if e.IP.Equal(peerVTEP) && e.State == netlink.NUD_PERMANENT {
					mac = e.HardwareAddr.String()
				}
			}
			return err
		})
		return mac, err
	}
	forwardJump := func() bool {
		out, _ := testcluster.Exec(n1.NS, "iptables", "-w", "-S", "FORWARD")
		return strings.Contains(out, "-j DROVER-FORWARD")
	}
	masqRule := func() bool {
		out, _ := testcluster.Exec(n1.NS, "iptables", "-w", "-t", "nat", "-S", "DROVER-POSTROUTING")
		return strings.Contains(out, "MASQUERADE")
	}
	vxMTU := func() int {
		mtu := 0
		_ = n1.NS.Do(func(ns.NetNS) error {
			dev, err := vxDev()
			if err == nil {
				mtu = dev.Attrs().MTU
			}
			return err
		})
		return mtu
	}
	for _, tc := range []struct {
		name   string
		tamper func() error
		back   func() error // the exact entry is back
	}{
		{"a deleted route", func() error {
			return netlink.RouteDel(&netlink.Route{Dst: peerCIDR, Protocol: overlay.RouteProtocol})
		}, func() error {
			if !slices.Contains(droverRoutes(t, n1), peerCIDR.String()) {
				return fmt.Errorf("route to %s not back", peerCIDR)
			}
			return nil
		}},
		{"node-2's deleted FDB entry", func() error {
			dev, err := vxDev()
			if err != nil {
				return err
			}
			return netlink.NeighDel(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
				HardwareAddr: peerMAC, IP: n2.IP})
		}, func() error {
			if dst, err := fdbFor(); err != nil || dst != n2.IP.String() {
				return fmt.Errorf("FDB %s -> %q (%v), want %s", peerMAC, dst, err, n2.IP)
			}
			return nil
		}},
		{"node-2's deleted neighbour", func() error {
			dev, err := vxDev()
			if err != nil {
				return err
			}
			return netlink.NeighDel(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: netlink.FAMILY_V4, IP: peerVTEP})
		}, func() error {
			if mac, err := neighFor(); err != nil || mac != peerMAC.String() {
				return fmt.Errorf("neighbour %s -> %q (%v), want %s", peerVTEP, mac, err, peerMAC)
			}
			return nil
		}},
		{"a changed VXLAN MTU", func() error {
			dev, err := vxDev()
			if err != nil {
				return err
			}
			return netlink.LinkSetMTU(dev, 1300)
		}, func() error {
			if mtu := vxMTU(); mtu != 1450 {
				return fmt.Errorf("VXLAN MTU %d, want 1450", mtu)
			}
			return nil
		}},
		{"a deleted VXLAN device", func() error {
			dev, err := vxDev()
			if err != nil {
				return err
			}
			return netlink.LinkDel(dev)
		}, func() error {
			if dst, err := fdbFor(); err != nil || dst != n2.IP.String() {
				return fmt.Errorf("FDB %s -> %q (%v) after the device came back", peerMAC, dst, err)
			}
			return nil
		}},
		{"a deleted masquerade rule", func() error {
			return exec.Command("iptables", "-w", "-t", "nat", "-F", "DROVER-POSTROUTING").Run()
		}, func() error {
			if !masqRule() {
				return fmt.Errorf("masquerade rule not back")
			}
			return nil
		}},
		{"a deleted FORWARD jump", func() error {
			return exec.Command("iptables", "-w", "-D", "FORWARD", "-m", "comment", "--comment", "drover: accept pod traffic", "-j", "DROVER-FORWARD").Run()
		}, func() error {
			if !forwardJump() {
				return fmt.Errorf("FORWARD jump to DROVER-FORWARD not back")
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writesBefore := metricValue(t, n1, "drover_reconcile_writes_total")
			if err := n1.NS.Do(func(ns.NetNS) error { return tc.tamper() }); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			start := time.Now()
			eventually(t, 10*time.Second, func() error {
				if err := tc.back(); err != nil {
					return err
				}
				if !masqRule() || !forwardJump() {
					return fmt.Errorf("iptables rules not in place")
				}
				return testcluster.Ping(pods[0].ns, pods[2].ip, 1)
			})
			// Every repair, the VXLAN device's included, is a counted write.
			eventually(t, 5*time.Second, func() error {
				if after := metricValue(t, n1, "drover_reconcile_writes_total"); after <= writesBefore {
					return fmt.Errorf("drover_reconcile_writes_total stayed %v across the repair", after)
				}
				return nil
			})
			t.Logf("repaired in %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

// metricValue reads one unlabelled metric from a node's droverd.
func metricValue(t *testing.T, n *node, name string) float64 {
	t.Helper()
	_, body, err := httpGet(n.NS, "http://127.0.0.1:9436/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", n.Name, err)
	}
	v, ok := sample(body, name)
	if !ok {
		t.Fatalf("%s exports no %s (or not as a number):\n%s", n.Name, name, grepLines(body, name))
	}
	return v
}

// sample is the value of one unlabelled sample in a /metrics body.
func sample(body, name string) (float64, bool) {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

func TestPodTrafficLeavesTheClusterWithTheNodeAddress(t *testing.T) {
	c := newCluster(t)
	// "The internet": a namespace on the underlay at the nodes' default
	// gateway address, with a TCP server that reports who connected.
	inet := testns.New(t)
	err := c.u.NS.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul-inet"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(inet.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		br, _ := netlink.LinkByName(testcluster.UnderlayBridge)
		l, _ := netlink.LinkByName("ul-inet")
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = inet.Do(func(ns.NetNS) error {
		l, _ := netlink.LinkByName("eth0")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 51, 100, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := inet.Do(func(ns.NetNS) error { ln, err = net.Listen("tcp", "198.51.100.1:8080"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(conn, "%s\n", conn.RemoteAddr().(*net.TCPAddr).IP)
			conn.Close()
		}
	}()

	n := c.start("node-1")
	c.waitReady(n, 15*time.Second)
	p := c.addPod(n)
	var seen string
	eventually(t, 10*time.Second, func() error {
		conn, err := dial(p.ns, "198.51.100.1:8080")
		if err != nil {
			return err
		}
		defer conn.Close()
		seen, err = bufio.NewReader(conn).ReadString('\n')
		return err
	})
	if strings.TrimSpace(seen) != n.IP.String() {
		t.Fatalf("the outside saw the pod as %s, want the node address %s", strings.TrimSpace(seen), n.IP)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
