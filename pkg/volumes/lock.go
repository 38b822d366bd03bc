package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// lock is a held per-volume flock(2). The kernel drops it when the process
// dies, so a killed driver never leaves a volume locked.
type lock struct {
	f *os.File
}

func (l *lock) unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// lockVolume takes the volume's lock, waiting until ctx ends. It polls with a
// non-blocking flock because a blocking flock cannot be interrupted by a
// deadline. After taking the lock it checks that the lock file still is the
// one at the path: delete removes lock files, and a waiter holding the
// removed inode must not think it owns the volume.
func (s *Store) lockVolume(ctx context.Context, name string) (*lock, error) {
	wait := time.Millisecond
	for {
		l, err := s.tryLockVolume(name)
		if err != nil || l != nil {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the lock of volume %s: %w", name, ctx.Err())
		case <-time.After(wait):
		}
		if wait < 16*time.Millisecond {
			wait *= 2
		}
	}
}

// tryLockVolume takes the volume's lock only if it is free right now, and
// returns nil (no error) when another call holds it, or when the lock file
// was replaced under it (a delete in progress): callers that merely tidy up
// must never wait behind the calls doing the work.
func (s *Store) tryLockVolume(name string) (*lock, error) {
	path := s.lockPath(name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock of %s: %w", name, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EINTR) {
			return nil, nil
		}
		return nil, fmt.Errorf("lock volume %s: %w", name, err)
	}
	if !sameFile(f, path) {
		f.Close()
		return nil, nil
	}
	return &lock{f: f}, nil
}

func (s *Store) lockPath(name string) string {
	return filepath.Join(s.root, "locks", name+".lock")
}

func sameFile(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}
