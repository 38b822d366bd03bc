package overlay_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/pkg/vxlan"
)

func TestVXLANSettingsFromTheEnvironmentAndFlagsTakeEffect(t *testing.T) {
	c := newCluster(t)
	// The DaemonSet's way (envFrom a ConfigMap), the flag way, and both:
	// a flag beats its environment variable.
	c.add("node-1").env = []string{"DROVER_VNI=4242", "DROVER_PORT=4790", "DROVER_MTU=1400"}
	c.add("node-2").args = []string{"--vni", "4242", "--port", "4790", "--mtu", "1400"}
	n3 := c.add("node-3")
	n3.env = []string{"DROVER_VNI=7", "DROVER_PORT=8472", "DROVER_MTU=1300"}
	n3.args = []string{"--vni", "4242", "--port", "4790", "--mtu", "1400"}
	var pods []*pod
	for _, name := range []string{"node-1", "node-2", "node-3"} {
		n := c.start(name)
		c.waitReady(n, 15*time.Second)
		pods = append(pods, c.addPod(n))
	}
	for _, n := range c.nodes {
		err := n.NS.Do(func(ns.NetNS) error {
			vx, err := vxlan.Get(vxlan.DefaultName)
			if err != nil {
				return err
			}
			if vx.VxlanId != 4242 || vx.Port != 4790 || vx.MTU != 1400 {
				return fmt.Errorf("VXLAN device has VNI %d, port %d, MTU %d; want 4242, 4790, 1400", vx.VxlanId, vx.Port, vx.MTU)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		if data, err := os.ReadFile(filepath.Join(n.dir, "node.json")); err != nil || !strings.Contains(string(data), `"mtu": 1400`) {
			t.Fatalf("%s node state: %s %v", n.Name, data, err)
		}
	}
	waitRoutes(t, c, 2)
	pingAll(t, pods)
	// The pods' MTU follows, so a full-size packet crosses unfragmented.
	out, err := testcluster.Exec(pods[0].ns, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", fmt.Sprint(1400-28), pods[2].ip.String())
	if err != nil {
		t.Fatalf("a 1400-byte packet with DF: %v\n%s", err, out)
	}
}

func TestDroverdRefusesToStartWithoutItsHealthEndpoints(t *testing.T) {
	c := newCluster(t)
	n := c.add("node-1")
	var taken net.Listener
	err := n.NS.Do(func(ns.NetNS) error {
		var err error
		taken, err = net.Listen("tcp", "127.0.0.1:9436")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	c.start("node-1")
	select {
	case <-n.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("droverd runs although its --listen address is taken: the kubelet's probes could never reach it")
	}
	logs, _ := os.ReadFile(filepath.Join(n.dir, "droverd.log"))
	if n.waitErr == nil || !strings.Contains(string(logs), "127.0.0.1:9436") || !strings.Contains(string(logs), "address already in use") {
		t.Fatalf("exit %v, want a failure naming the address and the reason; log:\n%s", n.waitErr, logs)
	}
	if _, err := os.Stat(n.conflist()); err == nil {
		t.Fatal("droverd wrote a conflist before failing")
	}
}

// fdb lists node n's FDB entries on the VXLAN device as "mac dst" strings.
func fdb(t *testing.T, n *node) []string {
	t.Helper()
	var out []string
	err := n.NS.Do(func(ns.NetNS) error {
		dev, err := netlink.LinkByName(vxlan.DefaultName)
		if err != nil {
			return err
		}
		entries, err := netlink.NeighList(dev.Attrs().Index, unix.AF_BRIDGE)
		for _, e := range entries {
			if e.IP != nil {
				out = append(out, e.HardwareAddr.String()+" "+e.IP.String())
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAPeerWhoseUnderlayAddressChangesIsFollowedEverywhere(t *testing.T) {
	c := newCluster(t)
	var pods []*pod
	for _, name := range []string{"node-1", "node-2", "node-3"} {
		n := c.start(name)
		c.waitReady(n, 15*time.Second)
		pods = append(pods, c.addPod(n))
	}
	waitRoutes(t, c, 2)
	pingAll(t, pods)
	n3 := c.nodes["node-3"]
	oldIP := renumber(t, n3, net.IPv4(198, 51, 100, 33).To4())
	peersFollow(t, c, n3, vxlan.MACForNode("node-3").String(), oldIP, "node-1", "node-2")
	eventually(t, 15*time.Second, func() error {
		if err := testcluster.Ping(pods[0].ns, pods[2].ip, 1); err != nil {
			return err
		}
		return testcluster.Ping(pods[2].ns, pods[1].ip, 1)
	})
}

// renumber moves node n's eth0 address to newIP, as a new DHCP lease does,
// and returns the old one. (Old address first: removing a primary address
// also removes the secondaries of its subnet unless promote_secondaries is
// set.)
func renumber(t *testing.T, n *node, newIP net.IP) net.IP {
	t.Helper()
	oldIP := n.IP
	err := n.NS.Do(func(ns.NetNS) error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrDel(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: oldIP, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		return netlink.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: newIP, Mask: net.CIDRMask(24, 32)}})
	})
	if err != nil {
		t.Fatalf("renumber %s: %v", n.Name, err)
	}
	n.IP = newIP
	return oldIP
}

// peersFollow waits until every node of others holds exactly one FDB entry
// for renumbered node n (VTEP MAC mac), at its new address, and checks that
// n's VXLAN device sends from it.
func peersFollow(t *testing.T, c *cluster, n *node, mac string, oldIP net.IP, others ...string) {
	t.Helper()
	for _, name := range others {
		o := c.nodes[name]
		eventually(t, 20*time.Second, func() error {
			var mine []string
			for _, e := range fdb(t, o) {
				if strings.HasPrefix(e, mac+" ") || strings.HasSuffix(e, " "+oldIP.String()) {
					mine = append(mine, e)
				}
			}
			if len(mine) != 1 || mine[0] != mac+" "+n.IP.String() {
				return fmt.Errorf("%s FDB entries for %s: %v, want exactly %s %s", name, n.Name, mine, mac, n.IP)
			}
			return nil
		})
	}
	err := n.NS.Do(func(ns.NetNS) error {
		vx, err := vxlan.Get(vxlan.DefaultName)
		if err != nil {
			return err
		}
		if !vx.SrcAddr.Equal(n.IP) {
			return fmt.Errorf("%s's VXLAN device still sends from %s", n.Name, vx.SrcAddr)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
