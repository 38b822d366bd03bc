// Package volumes holds drover's node-local volumes: sparse image files, the
// per-volume lock, the loop device and global mount each volume gets while a
// pod uses it, and the bind mounts into pod directories.
//
// State layout under the state directory (default /var/lib/drover):
//
//	volumes/<name>.img        the sparse image; its length is the hard quota
//	volumes/<name>.json       small metadata: fsType, formatted
//	mounts/<name>/            the global mount while any pod uses the volume
//	locks/<name>.lock         flock(2) target, one per volume
//	attachments/<hash>.json   pod dir -> volume, so unmount (which kubelet
//	                          calls with the pod dir only) finds the volume
//
// Who uses a volume is never counted here: it is read from the kernel's mount
// table every time, so a crash cannot leave a wrong count behind. Every step
// is idempotent and ordered so that the next call converges after a crash.
//
// This package speaks Go types; the Flexvolume JSON lives in pkg/flexvol.
package volumes

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Typed errors the driver edge turns into messages, and that teardown paths
// check to stay idempotent on purpose.
var (
	ErrNotFound         = errors.New("volume not found")
	ErrSizeRequired     = errors.New("size is required to create a volume")
	ErrInUse            = errors.New("volume is in use")
	ErrInvalidName      = errors.New("invalid volume name")
	ErrLostFilesystem   = errors.New("volume was formatted but no filesystem is found; refusing to format it again")
	ErrNotBlank         = errors.New("the device is not blank; refusing to format it (delete the volume, or wipe the image by hand if its content is unwanted)")
	ErrUnfinishedXFS    = errors.New("image placed by hand holds an xfs filesystem whose mkfs or offline repair never finished (sb_inprogress is set); refusing to format it: repair it with xfs_repair or delete the volume")
	ErrForeignMount     = errors.New("path holds a mount that is not a drover volume")
	ErrGlobalMountWrong = errors.New("global mount path holds an unexpected mount")
	ErrShrink           = errors.New("volumes cannot shrink")
	// ErrOnlineResizeDenied: the image grew but a mounted ext4 filesystem
	// cannot without CAP_SYS_RESOURCE; it grows on the next mount.
	ErrOnlineResizeDenied = errors.New("the image grew, but growing a mounted ext4 filesystem needs CAP_SYS_RESOURCE, which this process lacks; the filesystem grows when the volume is next mounted by a pod (after every pod using it stopped)")
)

// Supported filesystems; the zero value means ext4.
const (
	FSExt4 = "ext4"
	FSXFS  = "xfs"
)

// MinXFSSize is mkfs.xfs's own floor (xfsprogs 5.19+ refuses smaller).
const MinXFSSize = 300 << 20

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// ValidName checks a volume name: lowercase DNS-ish, no '/', no "..", at most
// 253 bytes, so it is safe as a file name under the state directory.
func ValidName(name string) error {
	if len(name) == 0 || len(name) > 253 || !nameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("%w %q: want [a-z0-9][a-z0-9._-]*, no \"..\", at most 253 bytes", ErrInvalidName, name)
	}
	return nil
}

// Store is the state directory.
type Store struct {
	root string
	// Failpoint, when set, is called at named steps; tests use it to crash
	// the driver exactly between two steps.
	Failpoint func(step string)
}

// New opens (and creates) the state directory at root.
func New(root string) (*Store, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("state directory %q must be absolute", root)
	}
	for _, d := range []string{"volumes", "mounts", "locks", "attachments"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("create state directory: %w", err)
		}
	}
	// Loop devices report their backing file by resolved path; resolve the
	// root once so comparisons hold when it sits behind a symlink.
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("resolve state directory %s: %w", root, err)
	}
	return &Store{root: real}, nil
}

// Open opens the state directory at root without creating anything, for a
// caller that only looks or removes (the admin command): a directory that
// does not exist yet holds no volumes.
func Open(root string) (*Store, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("state directory %q must be absolute", root)
	}
	real, err := filepath.EvalSymlinks(root)
	if errors.Is(err, os.ErrNotExist) {
		real = filepath.Clean(root)
	} else if err != nil {
		return nil, fmt.Errorf("resolve state directory %s: %w", root, err)
	}
	return &Store{root: real}, nil
}

// Root is the resolved state directory.
func (s *Store) Root() string { return s.root }

func (s *Store) imagePath(name string) string {
	return filepath.Join(s.root, "volumes", name+".img")
}

func (s *Store) metaPath(name string) string {
	return filepath.Join(s.root, "volumes", name+".json")
}

// GlobalPath is where the volume is mounted once per node.
func (s *Store) GlobalPath(name string) string { return filepath.Join(s.root, "mounts", name) }

// ImagePath is the volume's image file.
func (s *Store) ImagePath(name string) string { return s.imagePath(name) }

func (s *Store) fail(step string) {
	if s.Failpoint != nil {
		s.Failpoint(step)
	}
}

// meta is what the image file alone cannot tell.
type meta struct {
	FSType string `json:"fsType"`
	// Formatted is set once mkfs has finished: from then on a device without
	// a recognisable filesystem is an error, never a reason to format.
	Formatted bool `json:"formatted"`
	// InitPending is set with Formatted and cleared once the new
	// filesystem's root got its fsGroup ownership, so a crash in between is
	// finished by the next mount.
	InitPending bool `json:"initPending,omitempty"`
	// ResizePending asks the next global mount to grow an ext4 filesystem
	// offline first (expandfs could not grow it online).
	ResizePending bool `json:"resizePending,omitempty"`
	// Adopted marks an image the driver found rather than created: an
	// unfinished format on it is not known to be the driver's own.
	Adopted bool `json:"adopted,omitempty"`
}

func (s *Store) readMeta(name string) (meta, error) {
	var m meta
	b, err := os.ReadFile(s.metaPath(name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return m, fmt.Errorf("metadata of %s: %w", name, ErrNotFound)
		}
		return m, fmt.Errorf("read metadata of %s: %w", name, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("parse metadata of %s: %w", name, err)
	}
	return m, nil
}

func (s *Store) writeMeta(name string, m meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode metadata of %s: %w", name, err)
	}
	return writeFileAtomic(s.metaPath(name), b, true)
}

// writeFileAtomic writes a dot-file next to path and renames it over path,
// so readers see the old or the new content, never a torn one. durable adds
// the fsyncs that make it survive a power cut, for what outlives a reboot.
func writeFileAtomic(path string, data []byte, durable bool) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := f.Write(data)
	var serr error
	if durable {
		serr = f.Sync()
	}
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	if !durable {
		return nil
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
