package main_test

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/nodestate"
)

var specVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func atLeast(t *testing.T, v, min string) bool {
	ok, err := version.GreaterThanOrEqualTo(v, min)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// withPrev adds prevResult (and optional keys) to a config, as runtimes do
// for CHECK and for chained plugins.
func withPrev(t *testing.T, conf, prev []byte) []byte {
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	var p any
	if err := json.Unmarshal(prev, &p); err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = p
	b, _ := json.Marshal(m)
	return b
}

func gcConf(t *testing.T, conf []byte, valid ...[2]string) []byte {
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	atts := []map[string]string{}
	for _, v := range valid {
		atts = append(atts, map[string]string{"containerID": v[0], "ifname": v[1]})
	}
	m["cni.dev/valid-attachments"] = atts
	b, _ := json.Marshal(m)
	return b
}

// podState reads eth0's addresses and default gateway inside a pod.
func podState(t *testing.T, pod ns.NetNS, ifname string) (addrs []string, gw net.IP, mtu int, mac string) {
	t.Helper()
	err := pod.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		mtu, mac = l.Attrs().MTU, l.Attrs().HardwareAddr.String()
		as, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range as {
			addrs = append(addrs, a.IPNet.String())
		}
		rs, _ := netlink.RouteList(l, netlink.FAMILY_V4)
		for _, r := range rs {
			if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
				gw = r.Gw
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("inspect %s in pod: %v", ifname, err)
	}
	return
}

func TestEveryVerbForEverySpecVersion(t *testing.T) {
	for _, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			n := newNode(t)
			pod := testns.New(t)
			conf := n.conf(v, map[string]any{"dns": map[string]any{"nameservers": []string{"10.96.0.10"}, "search": []string{"svc.cluster.local"}}})

			add := n.run(t, call{cmd: "ADD", id: "ctr-" + v, netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "ADD")
			if len(add.stderr) != 0 {
				t.Errorf("ADD wrote to stderr: %q", add.stderr)
			}
			res, err := version.NewResult(v, add.stdout)
			if err != nil {
				t.Fatalf("ADD result does not decode as %s: %v\n%s", v, err, add.stdout)
			}
			if res.Version() != v {
				t.Fatalf("result version %s, want %s", res.Version(), v)
			}
			cur, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			_, podNet, _ := net.ParseCIDR(n.cidr)
			gw := nodestate.FirstAddress(podNet)
			if len(cur.IPs) != 1 || !podNet.Contains(cur.IPs[0].Address.IP) || !cur.IPs[0].Gateway.Equal(gw) {
				t.Fatalf("ips = %v, want one address of %s with gateway %s", cur.IPs, n.cidr, gw)
			}
			if cur.IPs[0].Interface == nil || *cur.IPs[0].Interface != 1 ||
				len(cur.Interfaces) != 2 || cur.Interfaces[1].Name != "eth0" || cur.Interfaces[1].Sandbox != pod.Path() ||
				!strings.HasPrefix(cur.Interfaces[0].Name, "drv") || cur.Interfaces[0].Sandbox != "" {
				t.Fatalf("interfaces = %+v, ip interface = %v", cur.Interfaces, cur.IPs[0].Interface)
			}
			if len(cur.Routes) != 1 || cur.Routes[0].Dst.String() != "0.0.0.0/0" || !cur.Routes[0].GW.Equal(gw) {
				t.Fatalf("routes = %v", cur.Routes)
			}
			if !slices.Equal(cur.DNS.Nameservers, []string{"10.96.0.10"}) {
				t.Fatalf("dns = %+v", cur.DNS)
			}
			addrs, podGW, mtu, mac := podState(t, pod, "eth0")
			if !slices.Contains(addrs, cur.IPs[0].Address.String()) || !podGW.Equal(gw) || mtu != 1500 || mac != cur.Interfaces[1].Mac {
				t.Fatalf("pod eth0: addrs %v gw %v mtu %d mac %s; result %s", addrs, podGW, mtu, mac, add.stdout)
			}

			check := n.run(t, call{cmd: "CHECK", id: "ctr-" + v, netns: pod.Path(), ifname: "eth0", stdin: withPrev(t, conf, add.stdout)})
			if atLeast(t, v, "0.4.0") {
				check.mustSucceed(t, "CHECK")
			} else if check.exitCode == 0 || check.cniErr.Code != types.ErrIncompatibleCNIVersion {
				t.Fatalf("CHECK on %s: want code 1, got exit %d %+v", v, check.exitCode, check.cniErr)
			}

			status := n.run(t, call{cmd: "STATUS", stdin: conf})
			gc := n.run(t, call{cmd: "GC", stdin: gcConf(t, conf, [2]string{"ctr-" + v, "eth0"})})
			if atLeast(t, v, "1.1.0") {
				status.mustSucceed(t, "STATUS")
				gc.mustSucceed(t, "GC")
			} else {
				for _, o := range []outcome{status, gc} {
					if o.exitCode == 0 || o.cniErr.Code != types.ErrIncompatibleCNIVersion {
						t.Fatalf("STATUS/GC on %s: want code 1, got exit %d %+v", v, o.exitCode, o.cniErr)
					}
				}
			}
			if len(n.allocations(t)) != 1 || n.hostVeths(t) != 1 {
				t.Fatalf("GC with the attachment valid removed it: allocations %v, veths %d", n.allocations(t), n.hostVeths(t))
			}

			for i := 0; i < 3; i++ {
				n.run(t, call{cmd: "DEL", id: "ctr-" + v, netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "DEL")
			}
			if a := n.allocations(t); len(a) != 0 {
				t.Fatalf("DEL left allocations %v", a)
			}
			if c := n.hostVeths(t); c != 0 {
				t.Fatalf("DEL left %d host veths", c)
			}
			if slices.Contains(links(t, pod), "eth0") {
				t.Fatal("DEL left eth0 in the pod")
			}
		})
	}
}

func TestDelIsIdempotent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, n *node, pod ns.NetNS) (netnsPath string)
	}{
		{"DEL succeeds when the netns is already gone", func(t *testing.T, n *node, pod ns.NetNS) string {
			path := pod.Path()
			_ = pod.Close()
			if err := testutils.UnmountNS(pod); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"DEL succeeds when the veth is already gone", func(t *testing.T, n *node, pod ns.NetNS) string {
			err := n.ns.Do(func(ns.NetNS) error {
				ls, _ := netlink.LinkList()
				for _, l := range ls {
					if strings.HasPrefix(l.Attrs().Name, "drv") {
						return netlink.LinkDel(l)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return pod.Path()
		}},
		{"DEL succeeds without CNI_NETNS", func(t *testing.T, n *node, pod ns.NetNS) string { return "" }},
		{"DEL succeeds when the address was already released", func(t *testing.T, n *node, pod ns.NetNS) string {
			for ip := range n.allocations(t) {
				if err := os.Remove(filepath.Join(n.dataDir, "test-net", ip)); err != nil {
					t.Fatal(err)
				}
			}
			return pod.Path()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			pod, err := testutils.NewNS()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = pod.Close(); _ = testutils.UnmountNS(pod) })
			conf := n.conf("1.1.0", nil)
			n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "ADD")
			path := tc.break_(t, n, pod)
			for i := 0; i < 2; i++ {
				n.run(t, call{cmd: "DEL", id: "c1", netns: path, ifname: "eth0", stdin: conf}).mustSucceed(t, "DEL")
			}
			if a := n.allocations(t); len(a) != 0 {
				t.Fatalf("allocations left: %v", a)
			}
			if c := n.hostVeths(t); c != 0 {
				t.Fatalf("%d host veths left", c)
			}
		})
	}
}

func TestRequestedAddressAndMAC(t *testing.T) {
	n := newNode(t)
	pod := testns.New(t)
	_, podNet, _ := net.ParseCIDR(n.cidr)
	want := podNet.IP.To4()
	want = net.IPv4(want[0], want[1], want[2], 77).To4()
	conf := n.conf("1.1.0", map[string]any{
		"capabilities":  map[string]bool{"ips": true, "mac": true},
		"runtimeConfig": map[string]any{"ips": []string{want.String() + "/24"}, "mac": "0a:00:00:00:00:77"},
	})
	add := n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "ADD")
	res, _ := current.NewResultFromResult(mustResult(t, add.stdout))
	if !res.IPs[0].Address.IP.Equal(want) || res.Interfaces[1].Mac != "0a:00:00:00:00:77" {
		t.Fatalf("result %s, want address %s and mac 0a:00:00:00:00:77", add.stdout, want)
	}
	_, _, _, mac := podState(t, pod, "eth0")
	if mac != "0a:00:00:00:00:77" {
		t.Fatalf("pod eth0 mac %s", mac)
	}

	other := testns.New(t)
	o := n.run(t, call{cmd: "ADD", id: "c2", netns: other.Path(), ifname: "eth0", stdin: conf})
	if o.exitCode == 0 || o.cniErr.Code != 101 {
		t.Fatalf("ADD of an address held by another pod: exit %d %+v, want code 101", o.exitCode, o.cniErr)
	}
	if len(n.allocations(t)) != 1 || n.hostVeths(t) != 1 {
		t.Fatal("the refused ADD changed state")
	}
}

func mustResult(t *testing.T, out []byte) types.Result {
	t.Helper()
	r, err := current.NewResult(out)
	if err != nil {
		t.Fatalf("decode result: %v", err)
	}
	return r
}

func TestFailedAddLeavesNoVethAndNoAllocation(t *testing.T) {
	n := newNode(t)
	pod := testns.New(t)
	// eth0 already exists in the pod, so the veth cannot be made.
	err := pod.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "other0"})
	})
	if err != nil {
		t.Fatal(err)
	}
	o := n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: n.conf("1.1.0", nil)})
	if o.exitCode == 0 || o.cniErr.Code != 102 || !strings.Contains(o.cniErr.Details, "already exists") {
		t.Fatalf("ADD over an existing eth0: exit %d %+v, want code 102 saying it exists", o.exitCode, o.cniErr)
	}
	if a := n.allocations(t); len(a) != 0 {
		t.Fatalf("failed ADD left allocations %v", a)
	}
	if c := n.hostVeths(t); c != 0 {
		t.Fatalf("failed ADD left %d host veths", c)
	}
}

func TestCheckReportsDivergence(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, n *node, pod ns.NetNS)
		code   uint
	}{
		{"CHECK fails when the pod address was removed", func(t *testing.T, n *node, pod ns.NetNS) {
			err := pod.Do(func(ns.NetNS) error {
				l, _ := netlink.LinkByName("eth0")
				as, _ := netlink.AddrList(l, netlink.FAMILY_V4)
				return netlink.AddrDel(l, &as[0])
			})
			if err != nil {
				t.Fatal(err)
			}
		}, 104},
		{"CHECK fails when the default route was removed", func(t *testing.T, n *node, pod ns.NetNS) {
			err := pod.Do(func(ns.NetNS) error {
				l, _ := netlink.LinkByName("eth0")
				rs, _ := netlink.RouteList(l, netlink.FAMILY_V4)
				for _, r := range rs {
					if r.Gw != nil {
						return netlink.RouteDel(&r)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}, 104},
		{"CHECK fails when the host veth was taken off the bridge", func(t *testing.T, n *node, pod ns.NetNS) {
			err := n.ns.Do(func(ns.NetNS) error {
				ls, _ := netlink.LinkList()
				for _, l := range ls {
					if strings.HasPrefix(l.Attrs().Name, "drv") {
						return netlink.LinkSetNoMaster(l)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}, 104},
		{"CHECK fails when the allocation was lost", func(t *testing.T, n *node, pod ns.NetNS) {
			for ip := range n.allocations(t) {
				_ = os.Remove(filepath.Join(n.dataDir, "test-net", ip))
			}
		}, 104},
		{"CHECK fails with code 3 when the netns is gone", func(t *testing.T, n *node, pod ns.NetNS) {
			_ = pod.Close()
			_ = testutils.UnmountNS(pod)
		}, types.ErrUnknownContainer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			pod, err := testutils.NewNS()
			if err != nil {
				t.Fatal(err)
			}
			path := pod.Path()
			t.Cleanup(func() { _ = pod.Close(); _ = testutils.UnmountNS(pod) })
			conf := n.conf("1.0.0", nil)
			add := n.run(t, call{cmd: "ADD", id: "c1", netns: path, ifname: "eth0", stdin: conf}).mustSucceed(t, "ADD")
			tc.tamper(t, n, pod)
			o := n.run(t, call{cmd: "CHECK", id: "c1", netns: path, ifname: "eth0", stdin: withPrev(t, conf, add.stdout)})
			if o.exitCode == 0 || o.cniErr.Code != tc.code {
				t.Fatalf("CHECK: exit %d %+v, want code %d", o.exitCode, o.cniErr, tc.code)
			}
		})
	}
}

func TestGCReleasesWhatIsNotValid(t *testing.T) {
	n := newNode(t)
	conf := n.conf("1.1.0", nil)
	pods := []ns.NetNS{testns.New(t), testns.New(t), testns.New(t)}
	for i, p := range pods {
		n.run(t, call{cmd: "ADD", id: "c" + string(rune('0'+i)), netns: p.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "ADD")
	}
	// A record left by a killed ADD names an attachment nobody knows.
	if err := os.WriteFile(filepath.Join(n.dataDir, "test-net", "10.255.255.9"), []byte("ghost\neth0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.run(t, call{cmd: "GC", stdin: gcConf(t, conf, [2]string{"c0", "eth0"})}).mustSucceed(t, "GC")
	allocs := n.allocations(t)
	if len(allocs) != 1 {
		t.Fatalf("after GC: allocations %v, want only c0's", allocs)
	}
	for _, rec := range allocs {
		if rec != "c0\neth0\n" {
			t.Fatalf("GC kept %q", rec)
		}
	}
	if c := n.hostVeths(t); c != 1 {
		t.Fatalf("after GC: %d host veths, want 1", c)
	}
	if !slices.Contains(links(t, pods[0]), "eth0") || slices.Contains(links(t, pods[1]), "eth0") {
		t.Fatal("GC removed the valid pod's eth0 or kept an invalid one")
	}
	n.run(t, call{cmd: "GC", stdin: gcConf(t, conf)}).mustSucceed(t, "GC with no valid attachments")
	if len(n.allocations(t)) != 0 || n.hostVeths(t) != 0 {
		t.Fatal("GC with no valid attachments left state behind")
	}
}

func TestNodeStateFile(t *testing.T) {
	n := newNode(t)
	pod := testns.New(t)
	conf := n.conf("1.1.0", map[string]any{"podCIDR": nil})

	st := n.run(t, call{cmd: "STATUS", stdin: conf})
	if st.exitCode == 0 || st.cniErr.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS without node state: exit %d %+v, want code 50", st.exitCode, st.cniErr)
	}
	add := n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf})
	if add.exitCode == 0 || add.cniErr.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD without node state: exit %d %+v, want code 11", add.exitCode, add.cniErr)
	}

	if err := nodestate.Write(n.state, nodestate.State{PodCIDR: "10.250.3.0/24", ClusterCIDR: "10.250.0.0/16", MTU: 1450}); err != nil {
		t.Fatal(err)
	}
	n.run(t, call{cmd: "STATUS", stdin: conf}).mustSucceed(t, "STATUS with node state")
	out := n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "ADD with node state")
	res, _ := current.NewResultFromResult(mustResult(t, out.stdout))
	if !strings.HasPrefix(res.IPs[0].Address.String(), "10.250.3.") || res.IPs[0].Gateway.String() != "10.250.3.1" {
		t.Fatalf("address from node state: %s", out.stdout)
	}
	if _, _, mtu, _ := podState(t, pod, "eth0"); mtu != 1450 {
		t.Fatalf("pod MTU %d, want the node state's 1450", mtu)
	}

	if err := os.WriteFile(n.state, []byte(`{"version":1,"podCIDR":"garbage"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	st = n.run(t, call{cmd: "STATUS", stdin: conf})
	if st.exitCode == 0 || st.cniErr.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS with a corrupt node state: exit %d %+v, want code 50", st.exitCode, st.cniErr)
	}
}

func TestStatusReportsAFullPool(t *testing.T) {
	n := newNode(t)
	conf := n.conf("1.1.0", map[string]any{"podCIDR": "10.251.0.0/30"}) // one pod address
	pod := testns.New(t)
	n.run(t, call{cmd: "STATUS", stdin: conf}).mustSucceed(t, "STATUS of an empty pool")
	n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "ADD")
	st := n.run(t, call{cmd: "STATUS", stdin: conf})
	if st.exitCode == 0 || st.cniErr.Code != types.ErrPluginNotAvailable || !strings.Contains(st.cniErr.Msg, "no free") {
		t.Fatalf("STATUS of a full pool: exit %d %+v, want code 50", st.exitCode, st.cniErr)
	}
	add := n.run(t, call{cmd: "ADD", id: "c2", netns: testns.New(t).Path(), ifname: "eth0", stdin: conf})
	if add.exitCode == 0 || add.cniErr.Code != 100 {
		t.Fatalf("ADD into a full pool: exit %d %+v, want code 100", add.exitCode, add.cniErr)
	}
}
