// Package testns gives tests their own network namespaces, removed when the
// test ends even if it fails, and the root check every such test needs. It is
// for tests only: nothing in a shipped binary imports it.
package testns

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"golang.org/x/sys/unix"

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
	t.Cleanup(func() { remove(t, n) })
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

// remove unmounts and deletes the namespace's bind mount. A plain unmount
// fails with EBUSY while a child forked by another goroutine still holds a
// copy of the namespace's descriptor between fork and exec; a lazy unmount
// detaches it anyway, and a namespace that still cannot be removed fails the
// test rather than leaking into /run/netns.
func remove(t testing.TB, n ns.NetNS) {
	path := n.Path()
	_ = n.Close()
	if err := testutils.UnmountNS(n); err == nil {
		return
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		t.Errorf("detach network namespace %s: %v", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("remove network namespace %s: %v", path, err)
	}
}
