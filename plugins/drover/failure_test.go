package main_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/testns"
)

// linkOf looks a link up in a namespace; nil when there is none.
func linkOf(t *testing.T, in ns.NetNS, name string) netlink.Link {
	t.Helper()
	var l netlink.Link
	err := in.Do(func(ns.NetNS) error {
		var err error
		l, err = netlink.LinkByName(name)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			l, err = nil, nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	return l
}

// defaultRouteVia reports the gateway of the namespace's default route, nil
// when it has none.
func defaultRouteVia(t *testing.T, in ns.NetNS) net.IP {
	t.Helper()
	var gw net.IP
	err := in.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range rs {
			if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
				gw = r.Gw
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

// requireNothingLeft fails unless the failed ADD left no veth on the node,
// no allocation in the store and no CNI_IFNAME in the pod.
func (n *node) requireNothingLeft(t *testing.T, pod ns.NetNS, what string) {
	t.Helper()
	if a := n.allocations(t); len(a) != 0 {
		t.Errorf("%s left allocations %v", what, a)
	}
	if c := n.hostVeths(t); c != 0 {
		t.Errorf("%s left %d host veths", what, c)
	}
	if linkOf(t, pod, "eth0") != nil {
		t.Errorf("%s left eth0 in the pod", what)
	}
}

// TestFailedAddUndoesEverything makes ADD fail after its veth pair exists:
// whatever failed, the veth (with the address on its pod end) must go and
// the allocation must be released, and nothing of the pod's own may change.
func TestFailedAddUndoesEverything(t *testing.T) {
	t.Run("ADD that cannot route the pod removes its veth and releases its address", func(t *testing.T) {
		n := newNode(t)
		pod := testns.New(t)
		// The pod already has a default route, so drover's cannot be added.
		err := pod.Do(func(ns.NetNS) error {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ext0"}, PeerName: "ext1"}); err != nil {
				return err
			}
			l, err := netlink.LinkByName("ext0")
			if err != nil {
				return err
			}
			addr, _ := netlink.ParseAddr("192.0.2.2/24")
			if err := netlink.AddrAdd(l, addr); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("192.0.2.1")})
		})
		if err != nil {
			t.Fatal(err)
		}
		o := n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: n.conf("1.1.0", nil)})
		if o.exitCode == 0 || o.cniErr.Code != 102 || !strings.Contains(o.cniErr.Details, "default route") {
			t.Fatalf("ADD into a pod with a default route: exit %d %+v, want code 102 about the default route", o.exitCode, o.cniErr)
		}
		n.requireNothingLeft(t, pod, "ADD that failed to route")
		if gw := defaultRouteVia(t, pod); !gw.Equal(net.ParseIP("192.0.2.1")) || linkOf(t, pod, "ext0") == nil {
			t.Errorf("the pod's own ext0 or default route changed: route via %v", gw)
		}
	})

	t.Run("ADD that cannot print its result removes its veth and releases its address", func(t *testing.T) {
		n := newNode(t)
		pod := testns.New(t)
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer full.Close()
		o := n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: n.conf("1.1.0", nil), stdout: full})
		if o.exitCode == 0 {
			t.Fatal("ADD whose result could not be written exited 0")
		}
		n.requireNothingLeft(t, pod, "ADD that failed to print its result")
		// The runtime counts that ADD as failed; the next one must work.
		n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: n.conf("1.1.0", nil)}).mustSucceed(t, "ADD again")
	})
}

// TestDelLeavesInterfacesDroverDidNotCreate: an interface that was in the
// pod under CNI_IFNAME before ADD makes that ADD fail; the DEL the runtime
// sends next must succeed and leave that interface where it was.
func TestDelLeavesInterfacesDroverDidNotCreate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		foreign netlink.Link
	}{
		{"DEL leaves a foreign bridge eth0 in the pod", &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}}},
		{"DEL leaves a foreign veth eth0 in the pod", &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "other0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			pod := testns.New(t)
			if err := pod.Do(func(ns.NetNS) error { return netlink.LinkAdd(tc.foreign) }); err != nil {
				t.Fatal(err)
			}
			before := linkOf(t, pod, "eth0")
			conf := n.conf("1.1.0", nil)
			o := n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf})
			if o.exitCode == 0 || o.cniErr.Code != 102 || !strings.Contains(o.cniErr.Details, "already exists") {
				t.Fatalf("ADD over a foreign eth0: exit %d %+v, want code 102 saying it exists", o.exitCode, o.cniErr)
			}
			for i := 0; i < 2; i++ {
				n.run(t, call{cmd: "DEL", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "DEL after the failed ADD")
			}
			after := linkOf(t, pod, "eth0")
			if after == nil || after.Attrs().Index != before.Attrs().Index || after.Type() != before.Type() {
				t.Fatalf("DEL removed or replaced the foreign eth0 (%s %d -> %v)", before.Type(), before.Attrs().Index, after)
			}
			if a := n.allocations(t); len(a) != 0 {
				t.Errorf("allocations left: %v", a)
			}
		})
	}
}

// TestDelRefusesWhatIsNotANetNS: only a CNI_NETNS that does not exist means
// the pod is gone. One that exists but is no network namespace, or cannot be
// opened, fails DEL with a CNI error and leaves the attachment alone, so no
// confused runtime tears down a pod on the strength of a wrong path.
func TestDelRefusesWhatIsNotANetNS(t *testing.T) {
	n := newNode(t)
	pod := testns.New(t)
	conf := n.conf("1.1.0", nil)
	n.run(t, call{cmd: "ADD", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "ADD")

	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, netns string
		code        uint
	}{
		{"DEL fails with code 4 when CNI_NETNS is a regular file", file, types.ErrInvalidEnvironmentVariables},
		{"DEL fails with code 4 when CNI_NETNS is a directory", dir, types.ErrInvalidEnvironmentVariables},
		{"DEL fails with code 4 when CNI_NETNS is a /proc file that is no namespace", "/proc/self/status", types.ErrInvalidEnvironmentVariables},
		{"DEL fails with code 4 when CNI_NETNS is a mount namespace", "/proc/self/ns/mnt", types.ErrInvalidEnvironmentVariables},
		{"DEL fails with code 5 when CNI_NETNS cannot be opened", loop, types.ErrIOFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := n.run(t, call{cmd: "DEL", id: "c1", netns: tc.netns, ifname: "eth0", stdin: conf})
			if o.exitCode == 0 || o.cniErr.Code != tc.code || !strings.Contains(o.cniErr.Msg, "CNI_NETNS") {
				t.Fatalf("DEL with CNI_NETNS=%s: exit %d %+v, want code %d naming CNI_NETNS", tc.netns, o.exitCode, o.cniErr, tc.code)
			}
			if len(n.allocations(t)) != 1 || n.hostVeths(t) != 1 || linkOf(t, pod, "eth0") == nil {
				t.Fatal("the refused DEL changed the attachment")
			}
		})
	}
	n.run(t, call{cmd: "DEL", id: "c1", netns: pod.Path(), ifname: "eth0", stdin: conf}).mustSucceed(t, "DEL with the real netns")
	n.run(t, call{cmd: "DEL", id: "c1", netns: filepath.Join(dir, "gone"), ifname: "eth0", stdin: conf}).mustSucceed(t, "DEL with a netns that does not exist")
	if len(n.allocations(t)) != 0 || n.hostVeths(t) != 0 {
		t.Fatal("DEL left the attachment behind")
	}
}
