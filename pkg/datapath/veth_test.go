package datapath

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/testns"
)

func TestAliasKeepsTheNetworkWhole(t *testing.T) {
	long := strings.Repeat("n", 200)
	for _, tc := range []struct {
		name  string
		owner Owner
	}{
		{"a short alias is kept as is", Owner{"drover", "abc", "eth0"}},
		{"a long container ID is cut, the network is not", Owner{"drover", strings.Repeat("c", 300), "eth0"}},
		{"a long network name is hashed so that it fits", Owner{long, strings.Repeat("c", 300), "eth0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.owner.Alias()
			if len(a) > maxAlias {
				t.Fatalf("alias of %d bytes, the kernel keeps %d", len(a), maxAlias)
			}
			if !strings.HasPrefix(a, networkAlias(tc.owner.Network)) {
				t.Fatalf("alias %q does not start with its network's prefix %q", a, networkAlias(tc.owner.Network))
			}
			if len(tc.owner.Network) <= maxAliasNetwork && a[:len(aliasPrefix)+len(tc.owner.Network)+1] != aliasPrefix+tc.owner.Network+"/" {
				t.Fatalf("alias %q does not name network %q", a, tc.owner.Network)
			}
		})
	}
	if networkAlias(long) == networkAlias(long+"x") {
		t.Fatal("two long network names share an alias prefix")
	}
	if strings.HasPrefix(networkAlias("ab"), networkAlias("a")) {
		t.Fatal("network a's prefix matches network ab's veths")
	}
}

// TestVethsAreFoundAndRemovedByNetwork programs two networks' pods on one
// bridge and checks that each network sees and removes only its own veths.
func TestVethsAreFoundAndRemovedByNetwork(t *testing.T) {
	node := testns.New(t)
	gw := &net.IPNet{IP: net.ParseIP("10.99.0.1").To4(), Mask: net.CIDRMask(24, 32)}
	var blue, red string
	err := node.Do(func(ns.NetNS) error {
		br, err := EnsureBridge(BridgeConfig{Name: "drover0", Gateway: gw, MTU: 1500})
		if err != nil {
			return err
		}
		for i, network := range []string{"blue", "red"} {
			pod := testns.New(t)
			name := HostVethName("ctr-"+network, "eth0")
			_, _, err := SetupPod(br, Pod{
				NetNSPath: pod.Path(), IfName: "eth0", HostVeth: name,
				Owner: Owner{Network: network, ContainerID: "ctr-" + network, IfName: "eth0"},
				MTU:   1500, Addr: &net.IPNet{IP: net.IPv4(10, 99, 0, byte(10+i)).To4(), Mask: gw.Mask}, Gateway: gw.IP,
			})
			if err != nil {
				return err
			}
			if network == "blue" {
				blue = name
			} else {
				red = name
			}
		}
		got, err := NetworkVeths("blue")
		if err != nil {
			return err
		}
		if !slices.Equal(got, []string{blue}) {
			t.Errorf("NetworkVeths(blue) = %v, want [%s]", got, blue)
		}
		if err := DeleteHostVeth(red, "blue"); !errors.Is(err, ErrNotOurs) {
			t.Errorf("blue deleting red's veth: %v, want ErrNotOurs", err)
		}
		if _, err := netlink.LinkByName(red); err != nil {
			t.Errorf("red's veth after blue tried to delete it: %v", err)
		}
		if err := DeleteHostVeth(blue, "blue"); err != nil {
			t.Errorf("blue deleting its own veth: %v", err)
		}
		if err := DeleteHostVeth(blue, "blue"); !errors.Is(err, ErrLinkNotFound) {
			t.Errorf("deleting it again: %v, want ErrLinkNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenNetNSTellsGoneFromWrong(t *testing.T) {
	pod := testns.New(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, path string
		want       error // nil: opens
	}{
		{"a network namespace opens", pod.Path(), nil},
		{"a missing path is ErrNetNSNotFound", dir + "/gone", ErrNetNSNotFound},
		{"a directory is ErrNotNetNS", dir, ErrNotNetNS},
		{"a mount namespace is ErrNotNetNS", "/proc/self/ns/mnt", ErrNotNetNS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckNetNS(tc.path)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckNetNS(%s) = %v, want %v", tc.path, err, tc.want)
			}
		})
	}
}
