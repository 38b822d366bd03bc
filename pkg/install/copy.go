package install

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Mode is the permission installed executables get: kubelet and the
// container runtime exec them as root, others may read and run them.
const Mode fs.FileMode = 0o755

// tempPrefix marks a file being written. Both kubelet's Flexvolume prober
// and libcni ignore dot-files, so a half-written one is never called.
const tempPrefix = "."

// staleAfter is how old a leftover temp file must be before a later install
// removes it: old enough that no installer still running can own it.
const staleAfter = 10 * time.Minute

// CopyFile installs src at dst atomically: the content goes to a dot-file
// in dst's directory, is fsynced and chmodded, then renamed over dst, so a
// reader sees the old file or the new one and never a partial one, even
// while it executes dst. It returns false without writing when dst already
// has src's content and Mode.
func CopyFile(src, dst string) (changed bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("open source: %w", err)
	}
	defer in.Close()
	if same, err := sameContent(in, dst); err != nil {
		return false, err
	} else if same {
		return false, nil
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("rewind %s: %w", src, err)
	}

	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, Mode); err != nil {
		if errors.Is(err, syscall.EROFS) {
			// Kubelet's default plugin dir sits on a read-only /usr on
			// Flatcar, RHCOS and COS; those kubelets need another one.
			return false, fmt.Errorf("create %s: %w (a read-only host directory: give the kubelet a writable --volume-plugin-dir and set drover's --plugin-dir to it)", dir, err)
		}
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	removeStale(dir, filepath.Base(dst))
	tmp, err := os.CreateTemp(dir, tempPrefix+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("create temp file for %s: %w", dst, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, in); err != nil {
		return false, fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	// Without the fsync a crash after the rename could leave dst empty:
	// the rename may reach the disk before the data does.
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	// Chmod the open file rather than trusting the umask.
	if err := tmp.Chmod(Mode); err != nil {
		return false, fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return false, fmt.Errorf("rename into %s: %w", dst, err)
	}
	done = true
	if err := syncDir(dir); err != nil {
		return true, err
	}
	return true, nil
}

// sameContent reports whether dst is a regular file with Mode and the same
// bytes as src.
func sameContent(src *os.File, dst string) (bool, error) {
	si, err := src.Stat()
	if err != nil {
		return false, fmt.Errorf("stat source: %w", err)
	}
	di, err := os.Stat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", dst, err)
	}
	if !di.Mode().IsRegular() || di.Mode().Perm() != Mode || di.Size() != si.Size() {
		return false, nil
	}
	a, err := hashFile(src)
	if err != nil {
		return false, err
	}
	d, err := os.Open(dst)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", dst, err)
	}
	defer d.Close()
	b, err := hashFile(d)
	if err != nil {
		return false, err
	}
	return bytes.Equal(a, b), nil
}

func hashFile(f *os.File) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind %s: %w", f.Name(), err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return h.Sum(nil), nil
}

// syncDir makes the rename durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// removeStale deletes temp files an interrupted install left for base. A
// fresh one may belong to an installer running right now, so it stays.
func removeStale(dir, base string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !isTemp(e.Name(), base) {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleAfter {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// isTemp reports whether name is one of CopyFile's temp files for base.
func isTemp(name, base string) bool {
	return strings.HasPrefix(name, tempPrefix+base+".tmp-")
}
