package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/drover-net/drover/pkg/mountinfo"
	"golang.org/x/sys/unix"
)

// Sweep releases every volume that is mounted globally but has no pod bind
// mount left, and returns their names.
//
// Such a volume is what a mount killed between its global mount and its
// bind mount leaves behind when the pod is deleted before kubelet retries:
// kubelet calls unmount only for a pod dir whose mount succeeded, so nothing
// else would ever unmount it or free its loop device. The driver has no
// daemon, so every mount and unmount call sweeps after its own work.
//
// A volume in the middle of a mount looks the same (global mount made, bind
// not yet), but that mount holds the volume's lock from before the global
// mount until after the bind, as do unmount, expandfs and delete. So each
// volume's lock is only tried, never waited for: a busy volume is skipped
// (the next sweep gets it if it really is an orphan), and the sweep never
// stalls the call it runs in. Under the lock the mount table is read again
// before anything is released.
func (s *Store) Sweep(ctx context.Context) ([]string, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	var released []string
	var errs []error
	for _, name := range s.globallyMounted(mounts) {
		if ctx.Err() != nil {
			break
		}
		if inUse(mounts, s.GlobalPath(name)) {
			continue // the common case, decided without a lock or sysfs
		}
		ok, err := s.releaseOrphan(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("release orphaned volume %s: %w", name, err))
		}
		if ok {
			released = append(released, name)
		}
	}
	return released, errors.Join(errs...)
}

// releaseOrphan releases name if its lock is free and, under it, the volume
// is still mounted globally with no pod using it. It reports whether it
// released it.
func (s *Store) releaseOrphan(name string) (bool, error) {
	l, err := s.tryLockVolume(name)
	if err != nil || l == nil {
		return false, err
	}
	defer l.unlock()
	mounts, err := mountinfo.Read()
	if err != nil {
		return false, err
	}
	if _, ok := mountinfo.At(mounts, s.GlobalPath(name)); !ok {
		return false, nil // released by someone else in the meantime
	}
	if inUse(mounts, s.GlobalPath(name)) {
		return false, nil // a mount finished in the meantime
	}
	// releaseIfUnused checks the users once more, by the image's loop
	// device, as every release does.
	if err := s.releaseIfUnused(name); err != nil {
		return false, err
	}
	return true, nil
}

// inUse says whether the filesystem mounted at global is mounted anywhere
// else too: a pod's bind mount, or a propagated copy of one.
func inUse(mounts []mountinfo.Mount, global string) bool {
	gm, ok := mountinfo.At(mounts, global)
	if !ok {
		return false
	}
	for _, m := range mountinfo.OfDevice(mounts, gm.Major, gm.Minor) {
		if m.MountPoint != global {
			return true
		}
	}
	return false
}

// globallyMounted lists the volumes with a mount at their global path.
func (s *Store) globallyMounted(mounts []mountinfo.Mount) []string {
	prefix := filepath.Join(s.root, "mounts") + "/"
	seen := map[string]bool{}
	var names []string
	for _, m := range mounts {
		name, ok := strings.CutPrefix(m.MountPoint, prefix)
		if !ok || strings.Contains(name, "/") || ValidName(name) != nil || seen[name] {
			continue
		}
		seen[name] = true
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// busy reports whether some call holds the volume's lock right now. It
// takes and drops the lock at once and creates nothing, so a listing can
// tell a mount in progress from an orphan without disturbing either.
func (s *Store) busy(name string) bool {
	f, err := os.OpenFile(s.lockPath(name), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false // no lock file: nobody ever locked it
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
}
