package cni_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/drover-net/drover/internal/cnirig"
)

// otherNetwork is a second drover network on n's node: its own name, pod
// CIDR, libcni cache and conflist, the same IPAM data directory, and the
// given bridge ("" for drover's default, the one n uses).
func (n *node) otherNetwork(t *testing.T, podCIDR, bridge string) *node {
	t.Helper()
	o := newNodeIn(t, n.ns, podCIDR)
	o.dataDir = n.dataDir
	conf := cnirig.Drover(o.podCIDR.String(), o.dataDir, o.stateFile)
	if bridge != "" {
		conf["bridge"] = bridge
	}
	o.chainOf(t, "1.1.0", conf)
	return o
}

// forget removes the runtime's cached result of p, so that libcni sends no
// DEL for it on GC: drover's GC alone must clean the attachment up.
func (n *node) forget(t *testing.T, p *pod) {
	t.Helper()
	if err := os.Remove(filepath.Join(n.cacheDir, "results", n.netName+"-"+p.id+"-"+p.ifName)); err != nil {
		t.Fatalf("forget %s in libcni's cache: %v", p.id, err)
	}
}

// TestGCLeavesOtherNetworksAlone: GC of one drover network, with no valid
// attachment at all, removes that network's pods and nothing of another
// drover network's on the same node, whether the two share a bridge or not.
func TestGCLeavesOtherNetworksAlone(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	for i, tc := range []struct {
		name, bridge string
	}{
		{"GC of one network leaves the pods of another on the same bridge working", ""},
		{"GC of one network leaves the pods of another on its own bridge working", "drover1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newNode(t, fmt.Sprintf("10.244.%d.0/24", 60+2*i))
			b := a.otherNetwork(t, fmt.Sprintf("10.244.%d.0/24", 61+2*i), tc.bridge)
			var aPods, bPods []*pod
			var bVeths []string
			for k := 0; k < 2; k++ {
				p := newPod(t, fmt.Sprintf("a-%d", k))
				if _, err := c.add(t, a, p); err != nil {
					t.Fatalf("ADD %s to network a: %v", p.id, err)
				}
				a.forget(t, p)
				aPods = append(aPods, p)
				q := newPod(t, fmt.Sprintf("b-%d", k))
				res, err := c.add(t, b, q)
				if err != nil {
					t.Fatalf("ADD %s to network b: %v", q.id, err)
				}
				bPods = append(bPods, q)
				bVeths = append(bVeths, res.Interfaces[0].Name)
			}
			slices.Sort(bVeths)

			if err := c.gc(t, a, nil); err != nil {
				t.Fatalf("GC of network a: %v", err)
			}
			if got := a.allocations(t); len(got) > 0 {
				t.Errorf("GC of network a left its allocations %v", got)
			}
			for _, p := range aPods {
				if got := podAddrs(t, p); len(got) > 0 {
					t.Errorf("GC of network a left %v on %s", got, p.id)
				}
			}
			if v := a.hostVeths(t); !slices.Equal(v, bVeths) {
				t.Errorf("after GC of network a the node has host veths %v, want network b's %v", v, bVeths)
			}
			if got := len(b.allocations(t)); got != len(bPods) {
				t.Errorf("GC of network a changed network b's store: %d allocations, want %d", got, len(bPods))
			}
			for _, q := range bPods {
				if err := ping(q.ns, b.gateway); err != nil {
					t.Errorf("%s lost its network to GC of network a: %v", q.id, err)
				}
				if err := c.check(t, b, q); err != nil {
					t.Errorf("CHECK %s after GC of network a: %v", q.id, err)
				}
			}
			if err := ping(bPods[0].ns, podIP(t, bPods[1])); err != nil {
				t.Errorf("network b's pods cannot reach each other after GC of network a: %v", err)
			}

			for _, q := range bPods {
				if err := c.del(t, b, q); err != nil {
					t.Errorf("DEL %s: %v", q.id, err)
				}
			}
			b.requireClean(t, "DEL of network b's pods")
		})
	}
}

func podIP(t *testing.T, p *pod) net.IP {
	t.Helper()
	addrs := podAddrs(t, p)
	if len(addrs) != 1 {
		t.Fatalf("%s has addresses %v, want one", p.id, addrs)
	}
	return net.ParseIP(addrs[0])
}
