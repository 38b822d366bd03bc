package main_test

import (
	"encoding/json"
	"io/fs"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/nodestate"
)

// hostVeth returns the node's one drover host veth.
func (n *node) hostVeth(t *testing.T) netlink.Link {
	t.Helper()
	for _, name := range links(t, n.ns) {
		if strings.HasPrefix(name, "drv") {
			return linkOf(t, n.ns, name)
		}
	}
	t.Fatal("no host veth on the node")
	return nil
}

// hairpin reads the bridge-port hairpin flag of a link on the node.
func (n *node) hairpin(t *testing.T, l netlink.Link) bool {
	t.Helper()
	var on bool
	err := n.ns.Do(func(ns.NetNS) error {
		pi, err := netlink.LinkGetProtinfo(l)
		on = pi.Hairpin
		return err
	})
	if err != nil {
		t.Fatalf("protinfo of %s: %v", l.Attrs().Name, err)
	}
	return on
}

// TestStandaloneConfigOverrides: what the network config says wins over the
// node state file droverd writes, key by key, and the bridge and hairpin
// keys shape the data path.
func TestStandaloneConfigOverrides(t *testing.T) {
	// A node state file the config's keys must beat.
	writeState := func(t *testing.T, n *node) {
		t.Helper()
		if err := nodestate.Write(n.state, nodestate.State{PodCIDR: "10.250.3.0/24", ClusterCIDR: "10.250.0.0/16", MTU: 1450}); err != nil {
			t.Fatal(err)
		}
	}
	add := func(t *testing.T, n *node, pod ns.NetNS, conf []byte) *current.Result {
		t.Helper()
		o := n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "ADD")
		res, err := current.NewResultFromResult(mustResult(t, o.stdout))
		if err != nil {
			t.Fatal(err)
		}
		n.run(t, call{cmd: "CHECK", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: withPrev(t, conf, o.stdout)}).mustSucceed(t, "CHECK")
		return res
	}

	t.Run("config mtu wins over the node state file", func(t *testing.T) {
		n := newNode(t)
		pod := testns.New(t)
		writeState(t, n)
		res := add(t, n, pod, n.conf("1.1.0", map[string]any{"podCIDR": nil, "mtu": 1400}))
		if !strings.HasPrefix(res.IPs[0].Address.IP.String(), "10.250.3.") {
			t.Fatalf("address %s does not come from the node state file", res.IPs[0].Address.IP)
		}
		if _, _, mtu, _ := podState(t, pod, "eth0"); mtu != 1400 {
			t.Errorf("pod MTU %d, want the config's 1400 (the file says 1450)", mtu)
		}
		for _, name := range []string{"drover0", res.Interfaces[0].Name} {
			if l := linkOf(t, n.ns, name); l == nil || l.Attrs().MTU != 1400 {
				t.Errorf("%s: %v, want MTU 1400", name, l)
			}
		}
	})

	t.Run("config clusterCIDR wins over the node state file", func(t *testing.T) {
		n := newNode(t)
		pod := testns.New(t)
		writeState(t, n)
		// The file's own clusterCIDR holds its podCIDR; the config's does
		// not, and is the one that counts.
		o := n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0",
			stdin: n.conf("1.1.0", map[string]any{"podCIDR": nil, "clusterCIDR": "10.251.0.0/16"})})
		if o.exitCode == 0 || !strings.Contains(o.cniErr.Msg+o.cniErr.Details, "not inside clusterCIDR 10.251.0.0/16") {
			t.Fatalf("ADD with a config clusterCIDR that misses the file's podCIDR: exit %d %+v", o.exitCode, o.cniErr)
		}
		n.requireNothingLeft(t, pod, "the refused ADD")
		add(t, n, pod, n.conf("1.1.0", map[string]any{"podCIDR": nil, "clusterCIDR": "10.0.0.0/8"}))
	})

	t.Run("podCIDR in the config wins when the node state file also exists", func(t *testing.T) {
		n := newNode(t)
		pod := testns.New(t)
		writeState(t, n)
		res := add(t, n, pod, n.conf("1.1.0", nil))
		_, podNet, _ := net.ParseCIDR(n.cidr)
		if !podNet.Contains(res.IPs[0].Address.IP) || !res.IPs[0].Gateway.Equal(nodestate.FirstAddress(podNet)) {
			t.Fatalf("result %v, want an address and gateway of the config's %s", res.IPs[0], n.cidr)
		}
		// With podCIDR set the file is not read at all: not even its MTU.
		if _, _, mtu, _ := podState(t, pod, "eth0"); mtu != 1500 {
			t.Errorf("pod MTU %d, want the default 1500, not the file's 1450", mtu)
		}
	})

	t.Run("a custom bridge is created and used", func(t *testing.T) {
		n := newNode(t)
		pod := testns.New(t)
		conf := n.conf("1.1.0", map[string]any{"bridge": "br-pods"})
		add(t, n, pod, conf)
		br := linkOf(t, n.ns, "br-pods")
		if br == nil || br.Type() != "bridge" {
			t.Fatalf("br-pods: %v, want a bridge", br)
		}
		if linkOf(t, n.ns, "drover0") != nil {
			t.Error("drover0 was created although the config names br-pods")
		}
		if m := n.hostVeth(t).Attrs().MasterIndex; m != br.Attrs().Index {
			t.Errorf("host veth is on link %d, not on br-pods (%d)", m, br.Attrs().Index)
		}
		var addrs []netlink.Addr
		_ = n.ns.Do(func(ns.NetNS) error { addrs, _ = netlink.AddrList(br, netlink.FAMILY_V4); return nil })
		_, podNet, _ := net.ParseCIDR(n.cidr)
		if len(addrs) != 1 || !addrs[0].IP.Equal(nodestate.FirstAddress(podNet)) {
			t.Errorf("br-pods has %v, want the gateway %s", addrs, nodestate.FirstAddress(podNet))
		}
		n.run(t, call{cmd: "GC", stdin: gcConf(t, conf)}).mustSucceed(t, "GC")
		if n.hostVeths(t) != 0 || len(n.allocations(t)) != 0 {
			t.Error("GC of a network on a custom bridge left its attachment")
		}
	})

	for _, tc := range []struct {
		name    string
		hairpin any // nil: key absent
		want    bool
	}{
		{"hairpin is on by default", nil, true},
		{"hairpin false is honoured", false, false},
		{"hairpin true is honoured", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			pod := testns.New(t)
			add(t, n, pod, n.conf("1.1.0", map[string]any{"hairpin": tc.hairpin}))
			if got := n.hairpin(t, n.hostVeth(t)); got != tc.want {
				t.Errorf("hairpin on the host veth's bridge port is %v, want %v", got, tc.want)
			}
		})
	}
}

// TestStatusWritesNothing: STATUS only reads. Runtimes call it over and over,
// before any pod exists; it must not create the store, its lock or anything
// else, whether it answers yes or no.
func TestStatusWritesNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra map[string]any
		code  uint // 0: success
	}{
		{"STATUS of a ready node creates nothing", nil, 0},
		{"STATUS without node state creates nothing", map[string]any{"podCIDR": nil}, types.ErrPluginNotAvailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			root := t.TempDir()
			for _, dataDir := range []string{root, filepath.Join(root, "not-yet")} {
				extra := map[string]any{"dataDir": dataDir, "nodeState": filepath.Join(root, "node.json")}
				for k, v := range tc.extra {
					extra[k] = v
				}
				o := n.run(t, call{cmd: "STATUS", stdin: n.conf("1.1.0", extra)})
				if tc.code == 0 {
					o.mustSucceed(t, "STATUS")
				} else if o.exitCode == 0 || o.cniErr.Code != tc.code {
					t.Fatalf("STATUS: exit %d %+v, want code %d", o.exitCode, o.cniErr, tc.code)
				}
				var made []string
				_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
					if path != root {
						made = append(made, path)
					}
					return err
				})
				if len(made) != 0 {
					t.Fatalf("STATUS with dataDir %s created %v", dataDir, made)
				}
			}
		})
	}
}

// TestVersionAnswersEachCallersVersion: VERSION repeats the cniVersion of
// the config it is given, for every version drover supports, and lists them
// all; without a config it answers with the version it implements.
func TestVersionAnswersEachCallersVersion(t *testing.T) {
	n := newNode(t)
	cases := map[string][]byte{"": nil}
	for _, v := range specVersions {
		cases[v] = n.conf(v, nil)
	}
	for want, stdin := range cases {
		o := n.run(t, call{cmd: "VERSION", stdin: stdin}).mustSucceed(t, "VERSION "+want)
		if len(o.stderr) != 0 {
			t.Errorf("VERSION %s wrote to stderr: %q", want, o.stderr)
		}
		var info struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal(o.stdout, &info); err != nil {
			t.Fatalf("VERSION %s answered %q: %v", want, o.stdout, err)
		}
		if want == "" {
			want = "1.1.0"
		}
		if info.CNIVersion != want || !slices.Equal(info.SupportedVersions, specVersions) {
			t.Errorf("VERSION called with cniVersion %s answered %s, want cniVersion %s and supportedVersions %v", want, o.stdout, want, specVersions)
		}
	}
}
