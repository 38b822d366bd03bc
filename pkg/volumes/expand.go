package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/drover-net/drover/pkg/loopdev"
	"github.com/drover-net/drover/pkg/mountinfo"
	"golang.org/x/sys/unix"
)

// Expand grows the volume's image to newSize bytes and its filesystem with
// it, online: a mounted volume stays mounted (resize2fs on the loop device,
// xfs_growfs on the mount point, both of which grow mounted filesystems). A
// volume no pod uses is attached for the duration of the call: ext4 grows
// offline before the mount, xfs (which only grows mounted) after it. The same size again is a
// no-op that still makes sure the filesystem fills the image (a retry after
// a crash between the two steps).
func (s *Store) Expand(ctx context.Context, name string, newSize int64) (err error) {
	if err := ValidName(name); err != nil {
		return err
	}
	if _, err := os.Stat(s.imagePath(name)); errors.Is(err, os.ErrNotExist) {
		// Checked before the lock file is made: a bad call changes nothing.
		return fmt.Errorf("volume %s: %w", name, ErrNotFound)
	}
	l, err := s.lockVolume(ctx, name)
	if err != nil {
		return err
	}
	defer l.unlock()

	img := s.imagePath(name)
	st, err := os.Stat(img)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("volume %s: %w", name, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("stat image of %s: %w", name, err)
	}
	if newSize < st.Size() {
		return fmt.Errorf("volume %s is %d bytes, asked for %d: %w", name, st.Size(), newSize, ErrShrink)
	}
	m, err := s.readMeta(name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	ext4 := m.FSType != FSXFS
	if ext4 && newSize > st.Size() && !m.ResizePending {
		// Recorded before the image grows, so that whatever happens next
		// the filesystem is grown by this call, a retry or the next mount.
		m.ResizePending = true
		if err := s.writeMeta(name, m); err != nil {
			return err
		}
	}
	if newSize > st.Size() {
		if err := os.Truncate(img, newSize); err != nil {
			return fmt.Errorf("grow image of %s to %d bytes: %w", name, newSize, err)
		}
	}
	s.fail("image-grown")

	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	_, mounted := mountinfo.At(mounts, s.GlobalPath(name))
	if ext4 && mounted && !m.ResizePending {
		return nil // an earlier call or mount already grew it
	}
	if ext4 && mounted && !canResizeExt4Online() {
		return fmt.Errorf("volume %s: %w", name, ErrOnlineResizeDenied)
	}
	if !mounted {
		// ext4 grows offline inside ensureGlobal (ResizePending); xfs only
		// grows mounted, below.
		if _, err := s.ensureGlobal(ctx, l, name, &m); err != nil {
			return err
		}
		defer func() {
			if rerr := s.releaseIfUnused(name); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}()
		if ext4 {
			return nil
		}
	}
	dev, err := loopdev.Find(img)
	if err != nil {
		return fmt.Errorf("loop device of %s: %w", name, err)
	}
	if err := loopdev.SetCapacity(dev); err != nil {
		return err
	}
	if !ext4 {
		if err := runHelper(ctx, l, "xfs_growfs", s.GlobalPath(name)); err != nil {
			return fmt.Errorf("grow filesystem of %s: %w", name, err)
		}
		return nil
	}
	if err := runHelper(ctx, l, "resize2fs", dev); err != nil {
		return fmt.Errorf("grow filesystem of %s: %w", name, err)
	}
	m.ResizePending = false
	return s.writeMeta(name, m)
}

// canResizeExt4Online: ext4's resize ioctls need CAP_SYS_RESOURCE (kernel
// ext4_resize_begin). Containers and some VMs drop it from root's bounding
// set; there the filesystem can only grow while unmounted.
func canResizeExt4Online() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}

// growExt4Offline checks and grows an unmounted ext4 filesystem to fill its
// device. e2fsck exit codes 1 and 2 mean "fixed", anything above is an error
// resize2fs would refuse on anyway.
func growExt4Offline(ctx context.Context, l *lock, dev string) error {
	if err := runHelper(ctx, l, "e2fsck", "-f", "-p", dev); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 2 {
			return fmt.Errorf("check before resize: %w", err)
		}
	}
	return runHelper(ctx, l, "resize2fs", dev)
}
