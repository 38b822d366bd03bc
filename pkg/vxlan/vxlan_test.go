package vxlan_test

import (
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/pkg/vxlan"
)

func TestMACForNodeIsStableUnicastAndLocal(t *testing.T) {
	a, b := vxlan.MACForNode("node-a"), vxlan.MACForNode("node-a")
	if a.String() != b.String() {
		t.Fatal("MAC differs between calls for one node")
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Fatalf("MAC %s is not a locally administered unicast address", a)
	}
	if vxlan.MACForNode("node-b").String() == a.String() {
		t.Fatal("two nodes got one MAC")
	}
}

// inNode runs f inside a fresh node namespace on an underlay, with the
// node's eth0 and a VXLAN config on it.
func inNode(t *testing.T, f func(eth0 netlink.Link, cfg vxlan.Config) error) {
	t.Helper()
	u := testcluster.NewUnderlay(t)
	node := u.AddNode(t, "n1")
	err := node.NS.Do(func(ns.NetNS) error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return f(eth0, vxlan.Config{
			Name: vxlan.DefaultName, VNI: 7, Port: 8472, LocalIP: node.IP, Underlay: eth0.Attrs().Index,
			MAC: vxlan.MACForNode("n1"), Addr: &net.IPNet{IP: net.IPv4(10, 244, 1, 0).To4(), Mask: net.CIDRMask(32, 32)},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEnsure(t *testing.T) {
	inNode(t, func(eth0 netlink.Link, cfg vxlan.Config) error {
		vx, err := vxlan.Ensure(cfg)
		if err != nil {
			return err
		}
		if vx.VxlanId != 7 || vx.Port != 8472 || vx.Learning || vx.MTU != eth0.Attrs().MTU-vxlan.Overhead ||
			vx.HardwareAddr.String() != cfg.MAC.String() || vx.Flags&net.FlagUp == 0 {
			t.Errorf("created device %+v", vx.LinkAttrs)
		}
		first := vx.Index

		// Idempotent: same config, same device.
		if vx, err = vxlan.Ensure(cfg); err != nil || vx.Index != first {
			t.Errorf("second Ensure replaced the device (%v)", err)
		}
		// Mutable attributes are fixed in place.
		if err := netlink.LinkSetMTU(vx, 1000); err != nil {
			return err
		}
		if err := netlink.LinkSetDown(vx); err != nil {
			return err
		}
		if vx, err = vxlan.Ensure(cfg); err != nil || vx.Index != first || vx.MTU != eth0.Attrs().MTU-vxlan.Overhead || vx.Flags&net.FlagUp == 0 {
			t.Errorf("Ensure did not repair MTU/up in place: %v %+v", err, vx.LinkAttrs)
		}
		// A changed pod CIDR moves the VTEP address; the old one goes.
		cfg.Addr = &net.IPNet{IP: net.IPv4(10, 244, 9, 0).To4(), Mask: net.CIDRMask(32, 32)}
		if vx, err = vxlan.Ensure(cfg); err != nil {
			return err
		}
		addrs, _ := netlink.AddrList(vx, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.9.0/32" {
			t.Errorf("addresses after a CIDR change: %v", addrs)
		}
		// An immutable attribute (VNI) replaces the device.
		cfg.VNI = 8
		if vx, err = vxlan.Ensure(cfg); err != nil || vx.VxlanId != 8 {
			t.Errorf("VNI change: %v, vni %d", err, vx.VxlanId)
		}
		// A deleted device is recreated.
		if err := netlink.LinkDel(vx); err != nil {
			return err
		}
		if _, err := vxlan.Ensure(cfg); err != nil {
			t.Errorf("recreate a deleted device: %v", err)
		}
		return nil
	})
}

func TestReconcileCountsItsWrites(t *testing.T) {
	inNode(t, func(eth0 netlink.Link, cfg vxlan.Config) error {
		for _, step := range []struct {
			name   string
			tamper func(*netlink.Vxlan) error
			want   int
		}{
			{"creating the device writes", nil, -1},
			{"an unchanged device costs nothing", nil, 0},
			{"a changed MTU is one write", func(vx *netlink.Vxlan) error { return netlink.LinkSetMTU(vx, 1000) }, 1},
			{"a device set down is one write", func(vx *netlink.Vxlan) error { return netlink.LinkSetDown(vx) }, 1},
			{"a removed VTEP address is one write", func(vx *netlink.Vxlan) error {
				return netlink.AddrDel(vx, &netlink.Addr{IPNet: cfg.Addr})
			}, 1},
			{"a deleted device is rebuilt with writes", func(vx *netlink.Vxlan) error { return netlink.LinkDel(vx) }, -1},
		} {
			if step.tamper != nil {
				vx, err := vxlan.Get(cfg.Name)
				if err != nil {
					return err
				}
				if err := step.tamper(vx); err != nil {
					return err
				}
			}
			_, writes, err := vxlan.Reconcile(cfg)
			if err != nil {
				return err
			}
			if (step.want < 0 && writes < 2) || (step.want >= 0 && writes != step.want) {
				t.Errorf("%s: %d writes, want %d (-1: several)", step.name, writes, step.want)
			}
		}
		return nil
	})
}
