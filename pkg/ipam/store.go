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
//	@<key>.10.244.1.5
//	                a second name (hard link) of that record, key hashing its
//	                attachment: an index, so that the directory listing alone
//	                says which addresses an attachment holds
//
// Records appear with link(2) from a complete temporary file, so a process
// killed at any point leaves either a whole record or none. The index name
// is linked after the address name and unlinked before it, so an index name
// never outlives its record; a record without one (left by a killed call,
// or written by a drover that had no index) is read and indexed by the next
// holder of the lock that looks for its attachment. Temporary files left by
// a killed process are removed by the next holder of the lock that reads the
// store. The lock is released by the kernel when its holder dies.
package ipam

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	lockFile         = "lock"
	lastReservedFile = "last_reserved"
	tmpPrefix        = ".tmp-"
	indexPrefix      = "@"
	// keyLen is the hex length of an attachment key: 128 bits of SHA-256,
	// and a record's content is checked before it is trusted anyway.
	keyLen = 32
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
	// locked: this process holds the lock, so reading the store may also
	// tidy it (temporaries, stale index names, missing index names).
	locked bool
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

// Lock takes the store's exclusive lock, waiting until ctx is done.
func (s *Store) Lock(ctx context.Context) error {
	fd := int(s.lock.Fd())
	// The common case, an idle store, takes the lock at once.
	err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		// A blocking flock wakes at once when the holder lets go, unlike
		// polling; it runs in a goroutine so the wait can be bounded. If
		// the wait times out, the process is about to exit with an error
		// anyway, and the kernel drops a lock taken late by that goroutine.
		done := make(chan error, 1)
		go func() { done <- unix.Flock(fd, unix.LOCK_EX) }()
		select {
		case err = <-done:
		case <-ctx.Done():
			s.pending = done
			return fmt.Errorf("%w %s: %w", ErrLockTimeout, s.dir, ctx.Err())
		}
	}
	if err != nil {
		return fmt.Errorf("lock IPAM store %s: %w", s.dir, err)
	}
	s.locked = true
	return nil
}

// Unlock releases the lock.
func (s *Store) Unlock() error {
	s.locked = false
	if err := unix.Flock(int(s.lock.Fd()), unix.LOCK_UN); err != nil {
		return fmt.Errorf("unlock IPAM store %s: %w", s.dir, err)
	}
	return nil
}

// attachmentKey names a in index names.
func attachmentKey(a Attachment) string {
	sum := sha256.Sum256([]byte(a.ContainerID + "\n" + a.IfName))
	return hex.EncodeToString(sum[:])[:keyLen]
}

func indexName(key string, ip net.IP) string { return indexPrefix + key + "." + ip.String() }

// parseIndexName splits "@<key>.<ip>"; ok is false for any other name.
func parseIndexName(name string) (key, ip string, ok bool) {
	rest, found := strings.CutPrefix(name, indexPrefix)
	if !found || len(rest) < keyLen+2 || rest[keyLen] != '.' {
		return "", "", false
	}
	return rest[:keyLen], rest[keyLen+1:], true
}

// listing is one read of the store's directory: names only, no record read.
type listing struct {
	ips   []net.IP            // every allocated address, in name order
	index map[string][]string // address -> its index names
	byKey map[string][]string // attachment key -> addresses indexed under it
}

// scan lists the store. With the lock held it also removes temporaries a
// killed holder left and index names whose record is gone (which only a
// hand edit makes: an index name is unlinked before its record).
func (s *Store) scan() (*listing, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list IPAM store %s: %w", s.dir, err)
	}
	l := &listing{index: map[string][]string{}, byKey: map[string][]string{}}
	records := map[string]bool{}
	var indexNames []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			if s.locked {
				_ = os.Remove(filepath.Join(s.dir, name))
			}
		case strings.HasPrefix(name, indexPrefix):
			indexNames = append(indexNames, name)
		case e.Type().IsRegular():
			if ip := net.ParseIP(name).To4(); ip != nil && ip.String() == name {
				l.ips = append(l.ips, ip)
				records[name] = true
			}
		}
	}
	for _, name := range indexNames {
		key, ip, ok := parseIndexName(name)
		if !ok {
			continue
		}
		if !records[ip] {
			if s.locked {
				_ = os.Remove(filepath.Join(s.dir, name))
			}
			continue
		}
		l.index[ip] = append(l.index[ip], name)
		l.byKey[key] = append(l.byKey[key], ip)
	}
	return l, nil
}

// read returns the attachment recorded for ip; ok is false when the record
// vanished since the listing (only an unlocked reader sees that).
func (s *Store) read(ip string) (a Attachment, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(s.dir, ip))
	if errors.Is(err, fs.ErrNotExist) {
		return a, false, nil
	}
	if err != nil {
		return a, false, fmt.Errorf("read allocation %s: %w", ip, err)
	}
	return parseRecord(data), true, nil
}

// List returns every allocation in the store.
func (s *Store) List() ([]Record, error) {
	l, err := s.scan()
	if err != nil {
		return nil, err
	}
	var recs []Record
	for _, ip := range l.ips {
		a, ok, err := s.read(ip.String())
		if err != nil {
			return nil, err
		}
		if ok {
			recs = append(recs, Record{IP: ip, Attachment: a})
		}
	}
	return recs, nil
}

// Held returns the addresses a holds.
func (s *Store) Held(a Attachment) ([]net.IP, error) {
	_, held, err := s.scanHeld(a)
	return held, err
}

// scanHeld lists the store and finds the addresses a holds in it.
func (s *Store) scanHeld(a Attachment) (*listing, []net.IP, error) {
	l, err := s.scan()
	if err != nil {
		return nil, nil, err
	}
	held, err := s.heldBy(l, a)
	return l, held, err
}

// heldBy returns the addresses a holds. Indexed records are read only under
// a's key, to confirm them; records without an index name are read all, and
// each is indexed under its own attachment on the way when the lock is held,
// so a store written before the index costs that once.
func (s *Store) heldBy(l *listing, a Attachment) ([]net.IP, error) {
	key := attachmentKey(a)
	var held []net.IP
	for _, ip := range l.ips {
		name := ip.String()
		indexed := len(l.index[name]) > 0
		if indexed && !slices.Contains(l.byKey[key], name) {
			continue
		}
		got, ok, err := s.read(name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if !indexed && s.locked {
			// Best effort: without the name the record is still found,
			// by this slower path.
			idx := indexName(attachmentKey(got), ip)
			if err := os.Link(filepath.Join(s.dir, name), filepath.Join(s.dir, idx)); err == nil {
				l.index[name] = append(l.index[name], idx)
			}
		}
		if got == a {
			held = append(held, ip)
		}
	}
	return held, nil
}

func parseRecord(data []byte) Attachment {
	id, ifname, _ := strings.Cut(strings.TrimSuffix(string(data), "\n"), "\n")
	return Attachment{ContainerID: id, IfName: ifname}
}

// reserve creates the record for ip and its index name; it reports false
// when ip is taken.
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
	if err := os.Link(tmp.Name(), filepath.Join(s.dir, indexName(attachmentKey(a), ip))); err != nil {
		// Refuse rather than leave a record the fast paths cannot see.
		if rerr := os.Remove(filepath.Join(s.dir, ip.String())); rerr != nil {
			return false, fmt.Errorf("index allocation of %s: %w; removing its record failed too: %w", ip, err, rerr)
		}
		return false, fmt.Errorf("index allocation of %s: %w", ip, err)
	}
	return true, nil
}

// releaseIP removes the record of ip, its index names first; an absent
// record is not an error.
func (s *Store) releaseIP(l *listing, ip net.IP) error {
	for _, name := range l.index[ip.String()] {
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("release %s: remove its index name: %w", ip, err)
		}
	}
	err := os.Remove(filepath.Join(s.dir, ip.String()))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	return nil
}

// Release frees every address held by a and returns them. Releasing an
// attachment that holds nothing succeeds with none.
func (s *Store) Release(a Attachment) ([]net.IP, error) {
	l, held, err := s.scanHeld(a)
	if err != nil {
		return nil, err
	}
	return s.release(l, held)
}

// ReleaseIf frees every allocation for which drop returns true.
func (s *Store) ReleaseIf(drop func(Record) bool) ([]net.IP, error) {
	l, err := s.scan()
	if err != nil {
		return nil, err
	}
	var dropped []net.IP
	for _, ip := range l.ips {
		a, ok, err := s.read(ip.String())
		if err != nil {
			return nil, err
		}
		if ok && drop(Record{IP: ip, Attachment: a}) {
			dropped = append(dropped, ip)
		}
	}
	return s.release(l, dropped)
}

func (s *Store) release(l *listing, ips []net.IP) ([]net.IP, error) {
	var freed []net.IP
	for _, ip := range ips {
		if err := s.releaseIP(l, ip); err != nil {
			return freed, err
		}
		freed = append(freed, ip)
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
