// Package testns gives tests their own network namespaces, removed when the
// test ends even if it fails, and the root check every such test needs. It is
// for tests only: nothing in a shipped binary imports it.
package testns

import (
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// RequireRoot fails the test (never skips it) when not run as root: CI runs
// as root, so a silent skip would hide a missing test.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates network namespaces, links or mounts: run it as root")
	}
}

// New creates a network namespace with a unique name under /run/netns, brings
// its loopback up, and registers its removal with t.Cleanup.
func New(t testing.TB) ns.NetNS {
	t.Helper()
	RequireRoot(t)
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		_ = testutils.UnmountNS(n)
	})
	err = n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatalf("bring up lo in %s: %v", n.Path(), err)
	}
	return n
}
