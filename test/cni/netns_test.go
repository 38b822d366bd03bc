package cni_test

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/drover-net/drover/internal/testns"
)

// newNS is testns.New with a second chance at removal. testns closes the
// namespace file and unmounts it, ignoring errors; but while any goroutine of
// this process is between fork and exec (these tests exec plugins from many
// goroutines at once), the child holds a copy of every open descriptor,
// including the namespace's, and the unmount fails with EBUSY. The file then
// stays in /run/netns for good. This cleanup runs after testns's and detaches
// what is left: the kernel frees the namespace when the child execs.
func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	var path string
	t.Cleanup(func() {
		if path == "" {
			return
		}
		if err := removeNSFile(path); err != nil {
			t.Errorf("remove network namespace: %v", err)
		}
	})
	n := testns.New(t)
	path = n.Path()
	return n
}

func removeNSFile(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not a mount point any more
		return fmt.Errorf("detach %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
