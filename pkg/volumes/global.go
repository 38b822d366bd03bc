package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/drover-net/drover/pkg/fsprobe"
	"github.com/drover-net/drover/pkg/loopdev"
	"github.com/drover-net/drover/pkg/mountinfo"
	"golang.org/x/sys/unix"
)

// ensureImage makes sure the image exists, creating a sparse one of size
// bytes when it does not (size 0: ErrSizeRequired). The image appears at
// its final name only complete (dot-file, truncate, fsync, rename), so a
// crash leaves either no image or a whole one.
func (s *Store) ensureImage(name string, size int64, fsType string) (meta, bool, error) {
	img := s.imagePath(name)
	if _, err := os.Stat(img); err == nil {
		m, err := s.readMeta(name)
		if errors.Is(err, ErrNotFound) {
			// The driver writes the metadata before it creates an image,
			// so an image without metadata was placed by hand (or by a
			// version that did not): adopt it, remembering that its
			// content is not ours.
			m = meta{FSType: fsType, Adopted: true}
			err = s.writeMeta(name, m)
		}
		return m, false, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return meta{}, false, fmt.Errorf("stat image of %s: %w", name, err)
	}
	if size <= 0 {
		return meta{}, false, fmt.Errorf("volume %s does not exist yet: %w", name, ErrSizeRequired)
	}
	// A fresh image: stale metadata from an earlier volume of that name
	// (deleted by hand) must not claim it is formatted.
	m := meta{FSType: fsType}
	if err := s.writeMeta(name, m); err != nil {
		return m, false, err
	}
	tmp := img + ".creating"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return m, false, fmt.Errorf("create image of %s: %w", name, err)
	}
	terr := f.Truncate(size)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(terr, serr, cerr); err != nil {
		os.Remove(tmp)
		return m, false, fmt.Errorf("size image of %s to %d bytes: %w", name, size, err)
	}
	s.fail("image-sized")
	if err := os.Rename(tmp, img); err != nil {
		return m, false, fmt.Errorf("publish image of %s: %w", name, err)
	}
	return m, true, syncDir(s.root + "/volumes")
}

// globalMount describes the volume's node-wide mount.
type globalMount struct {
	dev          string // /dev/loopN
	major, minor uint32
	formatted    bool // this call ran mkfs
}

// ensureGlobal attaches the image and mounts it at the global path, reusing
// what an earlier call (or a crashed one) left: an existing global mount, or
// a loop device already bound to the image. Loop devices are autoclear, so a
// crash before the mount frees the device with the dying process.
func (s *Store) ensureGlobal(ctx context.Context, l *lock, name string, m *meta) (globalMount, error) {
	img, global := s.imagePath(name), s.GlobalPath(name)
	mounts, err := mountinfo.Read()
	if err != nil {
		return globalMount{}, err
	}
	if gm, ok := mountinfo.At(mounts, global); ok {
		dev, err := loopdev.ByDevNumber(gm.Major, gm.Minor)
		if err == nil {
			if b, err := loopdev.BackingFile(dev); err == nil && b == img {
				return globalMount{dev: dev, major: gm.Major, minor: gm.Minor}, nil
			}
		}
		return globalMount{}, fmt.Errorf("%s: %w", global, ErrGlobalMountWrong)
	}

	dev, err := s.attach(img)
	if err != nil {
		return globalMount{}, err
	}
	defer dev.Close() // after the mount, the mount holds the device
	s.fail("attached")

	found, err := fsprobe.Device(dev.Path)
	if err != nil {
		return globalMount{}, err
	}
	fsType := m.FSType
	if fsType == "" {
		fsType = FSExt4
	}
	res := globalMount{dev: dev.Path}
	switch {
	case (found == fsprobe.None || found == fsprobe.XFSIncomplete) && m.Formatted:
		return globalMount{}, fmt.Errorf("volume %s on %s: %w", name, dev.Path, ErrLostFilesystem)
	case found == fsprobe.XFSIncomplete && m.Adopted:
		// Not our mkfs: an image placed by hand whose xfs format or
		// offline repair never finished may still be recoverable.
		return globalMount{}, fmt.Errorf("volume %s on %s: %w", name, dev.Path, ErrUnfinishedXFS)
	case found == fsprobe.None || found == fsprobe.XFSIncomplete:
		// XFSIncomplete here is this driver's own mkfs.xfs, killed before
		// it cleared sb_inprogress: the metadata never recorded the
		// format as done, so the device never held data, and the kernel
		// would refuse to mount it on every call. Format it again.
		if err := checkBlank(ctx, l, dev.Path, found == fsprobe.XFSIncomplete); err != nil {
			return globalMount{}, fmt.Errorf("volume %s: %w", name, err)
		}
		if err := mkfs(ctx, l, fsType, dev.Path); err != nil {
			return globalMount{}, fmt.Errorf("format volume %s: %w", name, err)
		}
		s.fail("formatted")
		*m = meta{FSType: fsType, Formatted: true, InitPending: true}
		if err := s.writeMeta(name, *m); err != nil {
			return globalMount{}, err
		}
		res.formatted = true
	case found == fsprobe.Ext4 || found == fsprobe.XFS:
		// Never format what holds a filesystem; mount what is there.
		fsType = found
		if !m.Formatted || m.FSType != found {
			// Adopting a filesystem this metadata never saw finish (a
			// crash right after mkfs): its root still needs fsGroup.
			m.InitPending = m.InitPending || !m.Formatted
			m.Formatted, m.FSType = true, found
			if err := s.writeMeta(name, *m); err != nil {
				return globalMount{}, err
			}
		}
		if m.ResizePending && found == fsprobe.Ext4 {
			if err := growExt4Offline(ctx, l, dev.Path); err != nil {
				return globalMount{}, fmt.Errorf("grow volume %s: %w", name, err)
			}
			m.ResizePending = false
			if err := s.writeMeta(name, *m); err != nil {
				return globalMount{}, err
			}
		}
	default:
		return globalMount{}, fmt.Errorf("volume %s holds %s, which drover does not mount", name, found)
	}

	if err := os.MkdirAll(global, 0o750); err != nil {
		return globalMount{}, fmt.Errorf("create global mount path: %w", err)
	}
	if err := unix.Mount(dev.Path, global, fsType, unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return globalMount{}, fmt.Errorf("mount %s (%s) at %s: %w", dev.Path, fsType, global, err)
	}
	s.fail("global-mounted")
	var st unix.Stat_t
	if err := unix.Stat(dev.Path, &st); err != nil {
		return globalMount{}, fmt.Errorf("stat %s: %w", dev.Path, err)
	}
	res.major, res.minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	return res, nil
}

// attach reuses a loop device already bound to img (one attached by hand, or
// by a version without autoclear) so one image never gets two devices, and
// attaches a new one otherwise.
func (s *Store) attach(img string) (*loopdev.Device, error) {
	if devPath, err := loopdev.Find(img); err == nil {
		if d, err := loopdev.Open(devPath); err == nil {
			if b, err := loopdev.BackingFile(devPath); err == nil && b == img {
				return d, nil
			}
			d.Close()
		}
	}
	d, err := loopdev.Attach(img, false)
	if err != nil {
		return nil, fmt.Errorf("attach loop device: %w", err)
	}
	return d, nil
}

// users lists the mounts of the volume's device other than the global mount:
// the pod bind mounts (and their propagated copies).
func (s *Store) users(mounts []mountinfo.Mount, name string) (dev string, major, minor uint32, users []mountinfo.Mount, err error) {
	dev, err = loopdev.Find(s.imagePath(name))
	if err != nil {
		return "", 0, 0, nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return "", 0, 0, nil, fmt.Errorf("stat %s: %w", dev, err)
	}
	major, minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	global := s.GlobalPath(name)
	for _, m := range mountinfo.OfDevice(mounts, major, minor) {
		if m.MountPoint != global {
			users = append(users, m)
		}
	}
	return dev, major, minor, users, nil
}

// releaseIfUnused unmounts the global mount and frees the loop device when no
// pod mount of the volume is left. Called with the volume locked.
func (s *Store) releaseIfUnused(name string) error {
	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	global := s.GlobalPath(name)
	dev, _, _, users, err := s.users(mounts, name)
	if errors.Is(err, loopdev.ErrNotFound) {
		// No device: at most an empty directory (or a stale mount of a
		// device that is gone) is left.
		if _, ok := mountinfo.At(mounts, global); ok {
			if err := unmountAll(global); err != nil {
				return err
			}
		}
		return s.dropRecordsOf(name)
	}
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return nil
	}
	if _, ok := mountinfo.At(mounts, global); ok {
		if err := unmountAll(global); err != nil {
			return fmt.Errorf("unmount global mount of %s: %w", name, err)
		}
	}
	s.fail("global-unmounted")
	// Autoclear frees the device on the umount; detach explicitly for a
	// device bound without it. Already gone is the expected answer.
	if err := loopdev.DetachFile(dev, s.imagePath(name)); err != nil && !errors.Is(err, loopdev.ErrNotFound) {
		return fmt.Errorf("free %s of volume %s: %w", dev, name, err)
	}
	// A process that has the device open for a moment (a scanner, a
	// concurrent DetachFile) defers the free to its last close: give it
	// that moment, so "unmounted" means the device is gone. A longer hold
	// still ends in the free (autoclear is set), so it is not an error.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if _, err := loopdev.Find(s.imagePath(name)); errors.Is(err, loopdev.ErrNotFound) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	os.Remove(global)
	return s.dropRecordsOf(name)
}

// unmountAll removes every mount stacked at path; "not mounted" ends it.
func unmountAll(path string) error {
	for i := 0; i < 16; i++ {
		if err := unix.Unmount(path, unix.UMOUNT_NOFOLLOW); err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return nil
			}
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 16 unmounts", path)
}
