package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/drover-net/drover/pkg/loopdev"
	"github.com/drover-net/drover/pkg/mountinfo"
	"golang.org/x/sys/unix"
)

// VolumeInfo is one volume as the admin command shows it.
type VolumeInfo struct {
	Name           string   `json:"name"`
	SizeBytes      int64    `json:"sizeBytes"`
	AllocatedBytes int64    `json:"allocatedBytes"`
	UsedBytes      *int64   `json:"usedBytes"` // filesystem use; null when not mounted
	FSType         string   `json:"fsType"`
	Formatted      bool     `json:"formatted"`
	Device         string   `json:"device,omitempty"`
	GlobalMount    string   `json:"globalMount,omitempty"`
	MountedAt      []string `json:"mountedAt"` // pod directories
	// Orphaned: mounted globally, no pod uses it and no call holds its
	// lock, the leftover of a mount killed before its bind mount whose
	// pod is gone. The next mount or unmount on the node (or Sweep)
	// releases it.
	Orphaned bool `json:"orphaned"`
}

// List describes every volume, without taking locks (a snapshot).
func (s *Store) List() ([]VolumeInfo, error) {
	entries, err := os.ReadDir(s.root + "/volumes")
	if errors.Is(err, os.ErrNotExist) {
		return []VolumeInfo{}, nil // no volume was ever made here
	} else if err != nil {
		return nil, fmt.Errorf("read volumes: %w", err)
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	out := []VolumeInfo{}
	for _, e := range entries {
		name, ok := cutSuffix(e.Name(), ".img")
		if !ok || ValidName(name) != nil {
			continue
		}
		info, err := s.describe(mounts, name)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return "", false
}

func (s *Store) describe(mounts []mountinfo.Mount, name string) (VolumeInfo, error) {
	info := VolumeInfo{Name: name, MountedAt: []string{}}
	var st unix.Stat_t
	if err := unix.Stat(s.imagePath(name), &st); err != nil {
		return info, fmt.Errorf("stat image of %s: %w", name, err)
	}
	info.SizeBytes, info.AllocatedBytes = st.Size, st.Blocks*512
	if m, err := s.readMeta(name); err == nil {
		info.FSType, info.Formatted = m.FSType, m.Formatted
	}
	dev, _, _, users, err := s.users(mounts, name)
	if errors.Is(err, loopdev.ErrNotFound) {
		return info, nil
	} else if err != nil {
		return info, err
	}
	info.Device = dev
	for _, u := range users {
		info.MountedAt = append(info.MountedAt, u.MountPoint)
	}
	if _, ok := mountinfo.At(mounts, s.GlobalPath(name)); ok {
		info.GlobalMount = s.GlobalPath(name)
		var fs unix.Statfs_t
		if err := unix.Statfs(info.GlobalMount, &fs); err == nil {
			used := int64(fs.Blocks-fs.Bfree) * fs.Bsize
			info.UsedBytes = &used
		}
		// A mount in progress looks the same until its bind; it holds
		// the lock throughout.
		info.Orphaned = len(info.MountedAt) == 0 && !s.busy(name)
	}
	return info, nil
}

// Delete removes a volume's image and state. Flexvolume has no delete verb,
// so this is the admin's; it refuses while any mount or loop device of the
// volume exists, and takes the volume's lock so no mount can start halfway.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if _, err := os.Stat(s.imagePath(name)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("volume %s: %w", name, ErrNotFound)
	}
	l, err := s.lockVolume(ctx, name)
	if err != nil {
		return err
	}
	defer l.unlock()
	if _, err := os.Stat(s.imagePath(name)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("volume %s: %w", name, ErrNotFound) // deleted while we waited
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	if _, ok := mountinfo.At(mounts, s.GlobalPath(name)); ok {
		return fmt.Errorf("volume %s is mounted at %s: %w", name, s.GlobalPath(name), ErrInUse)
	}
	if dev, _, _, users, err := s.users(mounts, name); err == nil {
		if len(users) > 0 {
			return fmt.Errorf("volume %s is mounted at %s: %w", name, users[0].MountPoint, ErrInUse)
		}
		return fmt.Errorf("volume %s is attached to %s: %w", name, dev, ErrInUse)
	} else if !errors.Is(err, loopdev.ErrNotFound) {
		return err
	}
	if err := s.dropRecordsOf(name); err != nil {
		return err
	}
	for _, p := range []string{s.imagePath(name), s.metaPath(name), s.GlobalPath(name), s.lockPath(name)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("delete volume %s: %w", name, err)
		}
	}
	return nil
}
