package cni_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/drover-net/drover/internal/cnirig"
)

// TestGCThroughLibcni covers GC where drover alone must do the work: the
// runtime has lost an attachment (no libcni cache entry, so libcni issues no
// DEL for it) and only cni.dev/valid-attachments tells drover what to keep.
func TestGCThroughLibcni(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	n := newNode(t, "10.244.2.0/24")
	n.chain(t, "1.1.0", cnirig.Portmap(), cnirig.Bandwidth())

	lost, kept := newPod(t, "pod-lost"), newPod(t, "pod-kept")
	var keptVeth string
	for _, p := range []*pod{lost, kept} {
		res, err := c.add(t, n, p)
		if err != nil {
			t.Fatalf("ADD %s: %v", p.id, err)
		}
		keptVeth = res.Interfaces[0].Name // kept is added last
	}
	cache := filepath.Join(n.cacheDir, "results", n.netName+"-"+lost.id+"-"+lost.ifName)
	if err := os.Remove(cache); err != nil {
		t.Fatalf("forget pod-lost in libcni's cache: %v", err)
	}

	valid := []types.GCAttachment{{ContainerID: kept.id, IfName: kept.ifName}}
	if err := c.gc(t, n, valid); err != nil {
		t.Fatalf("GC keeping pod-kept: %v", err)
	}
	allocs := n.allocations(t)
	if len(allocs) != 1 || allocs[0].containerID != kept.id {
		t.Errorf("after GC the store holds %v, want only pod-kept's address", allocs)
	}
	if v := n.hostVeths(t); len(v) != 1 || v[0] != keptVeth {
		t.Errorf("after GC the node has host veths %v, want only pod-kept's %s", v, keptVeth)
	}
	if got := podAddrs(t, lost); len(got) > 0 {
		t.Errorf("pod-lost still has %v after GC", got)
	}
	if err := ping(kept.ns, n.gateway); err != nil {
		t.Errorf("pod-kept lost its network to GC: %v", err)
	}
	if err := c.check(t, n, kept); err != nil {
		t.Errorf("CHECK pod-kept after GC: %v", err)
	}

	if err := c.del(t, n, kept); err != nil {
		t.Fatalf("DEL pod-kept: %v", err)
	}
	n.requireClean(t, "GC and DEL")
}

// TestEverySupportedVersion runs ADD, CHECK (where the version has it) and
// DEL through libcni with the conflist in each cniVersion drover claims,
// chained with portmap so the result must convert for a chained plugin too.
func TestEverySupportedVersion(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run("ADD, CHECK and DEL work in cniVersion "+v, func(t *testing.T) {
			n := newNode(t, "10.244.3.0/24")
			n.chain(t, v, cnirig.Portmap())
			p := newPod(t, "pod-"+v)
			res, err := c.add(t, n, p)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			ip := requireAttachment(t, n, p, res)
			if err := ping(p.ns, n.gateway); err != nil {
				t.Errorf("pod at %s cannot reach the gateway: %v", ip, err)
			}
			if ok, _ := version.GreaterThanOrEqualTo(v, "0.4.0"); ok {
				if err := c.check(t, n, p); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if err := c.del(t, n, p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			n.requireClean(t, "DEL")
		})
	}
}
