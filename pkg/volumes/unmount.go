package volumes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/drover-net/drover/pkg/loopdev"
	"github.com/drover-net/drover/pkg/mountinfo"
)

// UnmountResult says what the call did, for the log line.
type UnmountResult struct {
	Volume      string
	AlreadyGone bool
}

// Unmount removes the volume's bind mount at podDir and, when it was the
// last user, the global mount and the loop device. The image stays. A pod
// dir that holds no drover mount and has no record is already unmounted:
// success, so that retries are idempotent.
func (s *Store) Unmount(ctx context.Context, podDir string) (UnmountResult, error) {
	var res UnmountResult
	if !filepath.IsAbs(podDir) || filepath.Clean(podDir) != podDir {
		return res, fmt.Errorf("directory %q must be an absolute, clean path", podDir)
	}
	name, err := s.volumeOf(podDir)
	if errors.Is(err, ErrNotFound) {
		res.AlreadyGone = true
		return res, nil
	}
	if err != nil {
		return res, err
	}
	res.Volume = name
	l, err := s.lockVolume(ctx, name)
	if err != nil {
		return res, err
	}
	defer l.unlock()
	s.fail("locked")

	mounts, err := mountinfo.Read()
	if err != nil {
		return res, err
	}
	if _, ok := mountinfo.At(mounts, podDir); ok {
		if err := unmountAll(podDir); err != nil {
			return res, err
		}
	} else {
		res.AlreadyGone = true
	}
	s.fail("pod-unmounted")
	if err := s.releaseIfUnused(name); err != nil {
		return res, err
	}
	// The record goes last: a crash before this point leaves it for the
	// retry, which then finishes the release.
	return res, s.removeRecord(podDir)
}

// volumeOf finds the volume mounted (or being mounted) at podDir: from its
// record, else from the mount table (device -> loop -> image file).
func (s *Store) volumeOf(podDir string) (string, error) {
	if name, err := s.readRecord(podDir); err == nil {
		return name, nil
	} else if !errors.Is(err, ErrNotFound) {
		return "", err
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return "", err
	}
	m, ok := mountinfo.At(mounts, podDir)
	if !ok {
		return "", fmt.Errorf("%s: %w", podDir, ErrNotFound)
	}
	dev, err := loopdev.ByDevNumber(m.Major, m.Minor)
	if err != nil {
		return "", fmt.Errorf("%s: %w", podDir, ErrForeignMount)
	}
	backing, err := loopdev.BackingFile(dev)
	if err != nil {
		return "", fmt.Errorf("%s: %w", podDir, ErrForeignMount)
	}
	dir, file := filepath.Split(backing)
	name := strings.TrimSuffix(file, ".img")
	if filepath.Clean(dir) != filepath.Join(s.root, "volumes") || ValidName(name) != nil || name == file {
		return "", fmt.Errorf("%s: %w", podDir, ErrForeignMount)
	}
	return name, nil
}

type record struct {
	Volume string `json:"volume"`
	PodDir string `json:"podDir"`
}

func (s *Store) recordPath(podDir string) string {
	h := sha256.Sum256([]byte(podDir))
	return filepath.Join(s.root, "attachments", hex.EncodeToString(h[:20])+".json")
}

func (s *Store) writeRecord(podDir, name string) error {
	b, err := json.Marshal(record{Volume: name, PodDir: podDir})
	if err != nil {
		return fmt.Errorf("encode attachment record: %w", err)
	}
	// Not fsynced: records only matter while the mounts they describe
	// exist, and a power cut takes those mounts with it.
	return writeFileAtomic(s.recordPath(podDir), b, false)
}

func (s *Store) readRecord(podDir string) (string, error) {
	b, err := os.ReadFile(s.recordPath(podDir))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("record of %s: %w", podDir, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("read record of %s: %w", podDir, err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil || r.PodDir != podDir || ValidName(r.Volume) != nil {
		// A torn or foreign record is worthless; the mount table decides.
		os.Remove(s.recordPath(podDir))
		return "", fmt.Errorf("record of %s: %w", podDir, ErrNotFound)
	}
	return r.Volume, nil
}

func (s *Store) removeRecord(podDir string) error {
	if err := os.Remove(s.recordPath(podDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove record of %s: %w", podDir, err)
	}
	return nil
}

// records lists every attachment record.
func (s *Store) records() ([]record, error) {
	dir := filepath.Join(s.root, "attachments")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var out []record
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var r record
		if json.Unmarshal(b, &r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// dropRecordsOf removes the records of a volume nobody uses any more (called
// locked, after the release): they are leftovers of mounts that died before
// their bind mount, whose pod dirs kubelet has already removed.
func (s *Store) dropRecordsOf(name string) error {
	recs, err := s.records()
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.Volume == name {
			if err := s.removeRecord(r.PodDir); err != nil {
				return err
			}
		}
	}
	return nil
}
