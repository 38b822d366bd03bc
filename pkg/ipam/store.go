// Package ipam allocates pod addresses from the node's pod CIDR, in-process,
// with a store of one small file per allocated address. It is not a CNI IPAM
// plugin (nothing execs it) and it knows nothing of links or namespaces.
//
// Layout of a store directory (one per CNI network, on tmpfs by default so a
// reboot cannot leak addresses):
//
//	lock            flock(2) target: serialises every process using the store
//	last_reserved   the address handed out last, for round-robin allocation
//	10.244.1.5      one file per allocation: "<containerID>\n<ifname>\n"
//
// Records appear with link(2) from a complete temporary file, so a process
// killed at any point leaves either a whole record or none; temporary files
// left by a killed process are removed by the next holder of the lock. The
// lock is released by the kernel when its holder dies.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	lockFile         = "lock"
	lastReservedFile = "last_reserved"
	tmpPrefix        = ".tmp-"
)

var (
	// ErrPoolExhausted says every address of the pool is allocated.
	ErrPoolExhausted = errors.New("no free address in the pool")
	// ErrAddressUnavailable says a requested address is outside the pool,
	// reserved (network, gateway, broadcast) or held by another attachment.
	ErrAddressUnavailable = errors.New("requested address unavailable")
	// ErrLockTimeout says another process held the store lock too long.
	ErrLockTimeout = errors.New("timed out waiting for the IPAM store lock")
)

// Attachment names one interface of one container: the key of an allocation.
type Attachment struct {
	ContainerID string
	IfName      string
}

func (a Attachment) String() string { return a.ContainerID + "/" + a.IfName }

// Record is one allocation.
type Record struct {
	IP         net.IP
	Attachment Attachment
}

// Store is an open store directory. Its methods other than Lock, Unlock and
// Close must be called with the lock held.
type Store struct {
	dir  string
	lock *os.File
	// pending is set when a Lock timed out while its flock(2) still waits:
	// the file must stay open until that call returns.
	pending chan error
}

// Open creates the store directory if needed and opens its lock file.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create IPAM store %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open IPAM store lock: %w", err)
	}
	return &Store{dir: dir, lock: f}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Close closes the lock file, which also releases the lock.
func (s *Store) Close() error {
	if s.pending != nil {
		// A timed-out flock still blocks on the file: close it once that
		// call returns, which also drops a lock it took late.
		go func() { <-s.pending; _ = s.lock.Close() }()
		return nil
	}
	return s.lock.Close()
}

// Lock takes the store's exclusive lock, waiting until ctx is done. On
// success it also removes temporary files that a killed holder left behind.
func (s *Store) Lock(ctx context.Context) error {
	// A blocking flock is fair and wakes at once when the holder lets go,
	// unlike polling; it runs in a goroutine so the wait can be bounded. If
	// the wait times out, the process is about to exit with an error anyway,
	// and the kernel drops a lock taken late by that goroutine.
	fd := int(s.lock.Fd())
	done := make(chan error, 1)
	go func() { done <- unix.Flock(fd, unix.LOCK_EX) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("lock IPAM store %s: %w", s.dir, err)
		}
	case <-ctx.Done():
		s.pending = done
		return fmt.Errorf("%w %s: %w", ErrLockTimeout, s.dir, ctx.Err())
	}
	s.removeTemporaries()
	return nil
}

// Unlock releases the lock.
func (s *Store) Unlock() error {
	if err := unix.Flock(int(s.lock.Fd()), unix.LOCK_UN); err != nil {
		return fmt.Errorf("unlock IPAM store %s: %w", s.dir, err)
	}
	return nil
}

func (s *Store) removeTemporaries() {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			_ = os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}

// List returns every allocation in the store.
func (s *Store) List() ([]Record, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list IPAM store %s: %w", s.dir, err)
	}
	var recs []Record
	for _, e := range entries {
		ip := net.ParseIP(e.Name()).To4()
		if ip == nil || !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read allocation %s: %w", e.Name(), err)
		}
		recs = append(recs, Record{IP: ip, Attachment: parseRecord(data)})
	}
	return recs, nil
}

func parseRecord(data []byte) Attachment {
	id, ifname, _ := strings.Cut(strings.TrimSuffix(string(data), "\n"), "\n")
	return Attachment{ContainerID: id, IfName: ifname}
}

// reserve creates the record for ip; it reports false when ip is taken.
func (s *Store) reserve(ip net.IP, a Attachment) (bool, error) {
	tmp, err := os.CreateTemp(s.dir, tmpPrefix+"*")
	if err != nil {
		return false, fmt.Errorf("create allocation record: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(a.ContainerID + "\n" + a.IfName + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("write allocation record: %w", err)
	}
	// link(2) fails with EEXIST instead of replacing: a second guard, beside
	// the lock, against one address ever being recorded twice.
	err = os.Link(tmp.Name(), filepath.Join(s.dir, ip.String()))
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("record allocation of %s: %w", ip, err)
	}
	return true, nil
}

// releaseIP removes the record of ip; an absent record is not an error.
func (s *Store) releaseIP(ip net.IP) error {
	err := os.Remove(filepath.Join(s.dir, ip.String()))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	return nil
}

// Release frees every address held by a and returns them. Releasing an
// attachment that holds nothing succeeds with none.
func (s *Store) Release(a Attachment) ([]net.IP, error) {
	return s.ReleaseIf(func(r Record) bool { return r.Attachment == a })
}

// ReleaseIf frees every allocation for which drop returns true.
func (s *Store) ReleaseIf(drop func(Record) bool) ([]net.IP, error) {
	recs, err := s.List()
	if err != nil {
		return nil, err
	}
	var freed []net.IP
	for _, r := range recs {
		if !drop(r) {
			continue
		}
		if err := s.releaseIP(r.IP); err != nil {
			return freed, err
		}
		freed = append(freed, r.IP)
	}
	return freed, nil
}

// WithLock opens the store at dir, locks it for at most timeout, runs fn and
// closes the store.
func WithLock(dir string, timeout time.Duration, fn func(*Store) error) error {
	s, err := Open(dir)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.Lock(ctx); err != nil {
		return err
	}
	defer s.Unlock()
	return fn(s)
}
