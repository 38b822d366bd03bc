package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drover-net/drover/pkg/loopdev"
	"github.com/drover-net/drover/pkg/mountinfo"
	"golang.org/x/sys/unix"
)

// MountRequest is a validated mount call.
type MountRequest struct {
	Name     string
	Size     int64  // bytes; 0 when not given (then the volume must exist)
	FSType   string // FSExt4 or FSXFS; used when the volume is formatted
	ReadOnly bool
	FSGroup  *int64 // owner group of a new filesystem's root
	PodDir   string
}

// MountResult says what the call did, for the log line.
type MountResult struct {
	Created, Formatted, AlreadyMounted bool
	Device                             string
}

// Mount makes the volume available at req.PodDir, creating, attaching,
// formatting and mounting it globally as needed. Pods of one volume share
// one loop device and one global mount.
func (s *Store) Mount(ctx context.Context, req MountRequest) (res MountResult, err error) {
	if err := ValidName(req.Name); err != nil {
		return res, err
	}
	if err := checkDir(req.PodDir); err != nil {
		return res, err
	}
	if req.Size <= 0 {
		// Refuse before the lock file is made, so a bad call changes
		// nothing; ensureImage checks again under the lock.
		if _, err := os.Stat(s.imagePath(req.Name)); errors.Is(err, os.ErrNotExist) {
			return res, fmt.Errorf("volume %s does not exist yet: %w", req.Name, ErrSizeRequired)
		}
	}
	l, err := s.lockVolume(ctx, req.Name)
	if err != nil {
		return res, err
	}
	defer l.unlock()
	s.fail("locked")

	mounts, err := mountinfo.Read()
	if err != nil {
		return res, err
	}
	if pm, ok := mountinfo.At(mounts, req.PodDir); ok {
		// kubelet checks the mount point itself before calling, so this is
		// a retry after a lost answer: succeed if it is this volume.
		if dev, _, _, _, uerr := s.users(mounts, req.Name); uerr == nil {
			if d, err := loopdev.ByDevNumber(pm.Major, pm.Minor); err == nil && d == dev {
				res.AlreadyMounted, res.Device = true, dev
				return res, s.writeRecord(req.PodDir, req.Name)
			}
		}
		return res, fmt.Errorf("pod directory %s: %w", req.PodDir, ErrForeignMount)
	}

	m, created, err := s.ensureImage(req.Name, req.Size, req.FSType)
	if err != nil {
		return res, err
	}
	res.Created = created

	// The record comes first: if we die after the bind mount, the unmount
	// that follows can still find the volume.
	if err := s.writeRecord(req.PodDir, req.Name); err != nil {
		return res, err
	}
	ok := false
	defer func() {
		if !ok {
			// Undo this call's share: no bind mount was made, so drop the
			// record and the global mount if nobody else uses it.
			s.removeRecord(req.PodDir)
			if rerr := s.releaseIfUnused(req.Name); rerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", rerr))
			}
		}
	}()

	gm, err := s.ensureGlobal(ctx, l, req.Name, &m)
	if err != nil {
		return res, err
	}
	res.Formatted, res.Device = gm.formatted, gm.dev
	if m.InitPending {
		if err := s.initRoot(req.Name, req.FSGroup, &m); err != nil {
			return res, err
		}
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("before bind mount: %w", err)
	}
	if err := bindMount(s.GlobalPath(req.Name), req.PodDir, req.ReadOnly); err != nil {
		return res, err
	}
	ok = true
	s.fail("bound")
	return res, nil
}

// initRoot gives a new filesystem's root to the pod's fsGroup with the
// setgid bit, as kubelet's own ownership change would, so the pod can write
// even when its fsGroupChangePolicy skips the walk.
func (s *Store) initRoot(name string, fsGroup *int64, m *meta) error {
	root := s.GlobalPath(name)
	if fsGroup != nil {
		if err := os.Chown(root, 0, int(*fsGroup)); err != nil {
			return fmt.Errorf("give %s to group %d: %w", root, *fsGroup, err)
		}
		if err := os.Chmod(root, 0o775|os.ModeSetgid); err != nil {
			return fmt.Errorf("chmod %s: %w", root, err)
		}
	}
	m.InitPending = false
	return s.writeMeta(name, *m)
}

// bindMount clones the global mount onto dir. With the new mount API the
// clone is made read-only before it is attached, so a read-only pod never
// sees a read-write window, not even if the driver dies halfway; kernels
// without it get the classic bind then read-only remount.
func bindMount(src, dir string, readOnly bool) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) {
		return classicBind(src, dir, readOnly)
	}
	if err != nil {
		return fmt.Errorf("clone mount %s: %w", src, err)
	}
	defer unix.Close(fd)
	if readOnly {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return fmt.Errorf("make bind mount of %s read-only: %w", src, err)
		}
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, dir, err)
	}
	return nil
}

func classicBind(src, dir string, readOnly bool) error {
	if err := unix.Mount(src, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, dir, err)
	}
	if readOnly {
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			unix.Unmount(dir, 0)
			return fmt.Errorf("remount %s read-only: %w", dir, err)
		}
	}
	return nil
}

// checkDir wants an existing absolute directory, spelled cleanly.
func checkDir(dir string) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return fmt.Errorf("directory %q must be an absolute, clean path", dir)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("pod volume directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("pod volume directory %s is not a directory", dir)
	}
	return nil
}
