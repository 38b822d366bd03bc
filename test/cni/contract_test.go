package cni_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/cnirig"
)

// TestNodeStateFile: with no podCIDR in the config, drover serves from the
// node state file droverd writes, and says through STATUS and ADD when it
// cannot serve yet.
func TestNodeStateFile(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	n := newNode(t, "10.244.9.0/24")
	conf := cnirig.Drover("", n.dataDir, n.stateFile)
	delete(conf, "podCIDR")
	n.chainOf(t, "1.1.0", conf, cnirig.Portmap())
	p := newPod(t, "pod")

	requireCNIError(t, c.status(t, n), types.ErrPluginNotAvailable, "STATUS without node state")
	_, err := c.add(t, n, p)
	requireCNIError(t, err, types.ErrTryAgainLater, "ADD without node state")
	if got := podAddrs(t, p); len(got) > 0 {
		t.Errorf("ADD without node state addressed the pod: %v", got)
	}
	if err := c.del(t, n, p); err != nil {
		t.Errorf("DEL without node state: %v", err)
	}

	state := `{"version":1,"podCIDR":"10.244.9.0/24","clusterCIDR":"10.244.0.0/16","mtu":1450,"gateway":"10.244.9.1"}`
	if err := os.WriteFile(n.stateFile, []byte(state), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.status(t, n); err != nil {
		t.Errorf("STATUS with node state: %v", err)
	}
	res, err := c.add(t, n, p)
	if err != nil {
		t.Fatalf("ADD with node state: %v", err)
	}
	requireAttachment(t, n, p, res)
	for _, where := range []struct {
		in   ns.NetNS
		link string
	}{{p.ns, p.ifName}, {n.ns, "drover0"}, {n.ns, res.Interfaces[0].Name}} {
		if mtu := linkMTU(t, where.in, where.link); mtu != 1450 {
			t.Errorf("%s has MTU %d, the node state says 1450", where.link, mtu)
		}
	}
	if err := c.check(t, n, p); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := c.del(t, n, p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	n.requireClean(t, "DEL")
}

// TestRuntimeConfig: the ips and mac capabilities, as a runtime passes a
// static address and MAC, are honoured and conflicts refused with code 101.
func TestRuntimeConfig(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	n := newNode(t, "10.244.10.0/24")

	first := newPod(t, "static")
	first.caps = map[string]any{"ips": []string{"10.244.10.50/24"}, "mac": "0a:58:0a:f4:0a:32"}
	res, err := c.add(t, n, first)
	if err != nil {
		t.Fatalf("ADD with ips and mac: %v", err)
	}
	if ip := requireAttachment(t, n, first, res); ip.String() != "10.244.10.50" {
		t.Errorf("requested 10.244.10.50, got %s", ip)
	}
	if mac := res.Interfaces[1].Mac; mac != "0a:58:0a:f4:0a:32" {
		t.Errorf("requested MAC 0a:58:0a:f4:0a:32, result says %s", mac)
	}
	err = first.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(first.ifName)
		if err != nil {
			return err
		}
		if got := l.Attrs().HardwareAddr.String(); got != "0a:58:0a:f4:0a:32" {
			return fmt.Errorf("%s has MAC %s, requested 0a:58:0a:f4:0a:32", first.ifName, got)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if err := c.check(t, n, first); err != nil {
		t.Errorf("CHECK: %v", err)
	}

	for _, tc := range []struct {
		name, ip string
	}{
		{"an address another pod holds", "10.244.10.50/24"},
		{"the gateway address", "10.244.10.1/24"},
		{"an address outside the pod CIDR", "10.99.0.5/24"},
	} {
		t.Run("ADD requesting "+tc.name+" is refused with code 101", func(t *testing.T) {
			p := newPod(t, "wants-"+randHex(t, 3))
			p.caps = map[string]any{"ips": []string{tc.ip}}
			_, err := c.add(t, n, p)
			requireCNIError(t, err, 101, "ADD requesting "+tc.ip)
			if got := podAddrs(t, p); len(got) > 0 {
				t.Errorf("the refused pod got %v", got)
			}
			if err := c.del(t, n, p); err != nil {
				t.Errorf("DEL of the refused pod: %v", err)
			}
		})
	}
	if err := c.del(t, n, first); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	n.requireClean(t, "DEL")
}

// TestDELIsIdempotent: what a runtime's DEL may meet after crashes and
// restarts must all succeed and release the address.
func TestDELIsIdempotent(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	for _, tc := range []struct {
		name   string
		before func(t *testing.T, n *node, p *pod)
	}{
		{"DEL succeeds twice in a row", func(t *testing.T, n *node, p *pod) {
			if err := c.del(t, n, p); err != nil {
				t.Fatalf("first DEL: %v", err)
			}
		}},
		{"DEL succeeds and releases the address when the pod namespace is gone", func(t *testing.T, n *node, p *pod) {
			if err := removeNSFile(p.ns.Path()); err != nil {
				t.Fatal(err)
			}
			_ = p.ns.Close()
		}},
		{"DEL succeeds when the host veth was deleted by hand", func(t *testing.T, n *node, p *pod) {
			err := n.do(t, func() error {
				l, err := netlink.LinkByName(n.hostVeths(t)[0])
				if err != nil {
					return err
				}
				return netlink.LinkDel(l)
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, "10.244.11.0/24")
			n.chain(t, "1.1.0", cnirig.Portmap())
			p := newPod(t, "pod")
			if _, err := c.add(t, n, p); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			tc.before(t, n, p)
			if err := c.del(t, n, p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			n.requireClean(t, "DEL")
		})
	}
}

func linkMTU(t *testing.T, in ns.NetNS, name string) int {
	t.Helper()
	mtu := 0
	err := in.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("look up %s: %w", name, err)
		}
		mtu = l.Attrs().MTU
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return mtu
}

// TestCHECKDetectsDrift: CHECK through libcni answers drover's code 104 when
// the attachment no longer matches what ADD reported.
func TestCHECKDetectsDrift(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	for _, tc := range []struct {
		name  string
		drift func(t *testing.T, n *node, p *pod) error
	}{
		{"CHECK fails with 104 when the pod's address was removed", func(t *testing.T, n *node, p *pod) error {
			return p.ns.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName(p.ifName)
				if err != nil {
					return err
				}
				addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
				if err != nil || len(addrs) == 0 {
					return fmt.Errorf("no address to remove: %v", err)
				}
				return netlink.AddrDel(l, &addrs[0])
			})
		}},
		{"CHECK fails with 104 when the host veth left the bridge", func(t *testing.T, n *node, p *pod) error {
			return n.do(t, func() error {
				l, err := netlink.LinkByName(n.hostVeths(t)[0])
				if err != nil {
					return err
				}
				return netlink.LinkSetNoMaster(l)
			})
		}},
		{"CHECK fails with 104 when the address was released behind the pod's back", func(t *testing.T, n *node, p *pod) error {
			return os.Remove(n.storeDir() + "/" + podAddrs(t, p)[0])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, "10.244.12.0/24")
			p := newPod(t, "pod")
			if _, err := c.add(t, n, p); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if err := c.check(t, n, p); err != nil {
				t.Fatalf("CHECK before the drift: %v", err)
			}
			if err := tc.drift(t, n, p); err != nil {
				t.Fatalf("make the drift: %v", err)
			}
			requireCNIError(t, c.check(t, n, p), 104, "CHECK after the drift")
			if err := c.del(t, n, p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			n.requireClean(t, "DEL")
		})
	}
}

// TestVERSION: libcni's version query sees every spec version drover claims.
func TestVERSION(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	n := newNode(t, "10.244.13.0/24")
	var got []string
	err := n.do(t, func() error {
		ctx, cancel := callCtx()
		defer cancel()
		info, err := n.cni.GetVersionInfo(ctx, "drover")
		if err != nil {
			return err
		}
		got = info.SupportedVersions()
		return nil
	})
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	have := map[string]bool{}
	for _, v := range got {
		have[v] = true
	}
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		if !have[v] {
			t.Errorf("VERSION lists %v, missing %s", got, v)
		}
	}
}
