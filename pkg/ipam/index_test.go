package ipam

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// names lists the store's directory without lock and last_reserved.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if n := e.Name(); n != lockFile && n != lastReservedFile {
			out = append(out, n)
		}
	}
	return out
}

func TestAnAllocationHasAnIndexNameAndReleaseRemovesBoth(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/24", "10.1.0.1")
	a := Attachment{"cid-1", "eth0"}
	ip, err := allocate(t, dir, p, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ip.String(), indexName(attachmentKey(a), ip)} // ReadDir's order
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
	record, _ := os.Stat(filepath.Join(dir, want[0]))
	index, _ := os.Stat(filepath.Join(dir, want[1]))
	if !os.SameFile(record, index) {
		t.Fatal("the index name is not a second name of the record")
	}
	withStore(t, dir, func(s *Store) error {
		freed, err := s.Release(a)
		if len(freed) != 1 || !freed[0].Equal(ip) {
			t.Errorf("freed %v, want [%s]", freed, ip)
		}
		return err
	})
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("release left %v", got)
	}
}

// A record without an index name is what a call killed between its two
// links leaves, and what a store written before the index holds.
func TestARecordWithoutIndexNameIsFoundAndIndexed(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/24", "10.1.0.1")
	withStore(t, dir, func(*Store) error { return nil })
	if err := os.WriteFile(filepath.Join(dir, "10.1.0.9"), []byte("old\neth0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := Attachment{"old", "eth0"}
	ip, err := allocate(t, dir, p, a, nil)
	if err != nil || ip.String() != "10.1.0.9" {
		t.Fatalf("retried allocation of an unindexed record = %v, %v; want 10.1.0.9", ip, err)
	}
	if got, want := names(t, dir), []string{"10.1.0.9", indexName(attachmentKey(a), ip)}; !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v: the record was not indexed", got, want)
	}

	if err := os.WriteFile(filepath.Join(dir, "10.1.0.10"), []byte("older\neth0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Looking for another attachment indexes it too: a store written before
	// the index is read whole once, not on every call.
	withStore(t, dir, func(s *Store) error {
		held, err := s.Held(Attachment{"someone-else", "eth0"})
		if len(held) != 0 {
			t.Errorf("someone-else holds %v", held)
		}
		return err
	})
	older := indexName(attachmentKey(Attachment{"older", "eth0"}), net.ParseIP("10.1.0.10").To4())
	if !slices.Contains(names(t, dir), older) {
		t.Fatalf("an unindexed record read for another attachment was not indexed: %v", names(t, dir))
	}
	withStore(t, dir, func(s *Store) error {
		freed, err := s.Release(Attachment{"older", "eth0"})
		if len(freed) != 1 || freed[0].String() != "10.1.0.10" {
			t.Errorf("release of an unindexed record freed %v", freed)
		}
		return err
	})
	if got := names(t, dir); slices.Contains(got, "10.1.0.10") {
		t.Fatalf("unindexed record survived its release: %v", got)
	}
}

func TestAnIndexNameIsNotTrustedWithoutItsRecord(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/29", "10.1.0.1")
	a, b := Attachment{"a", "eth0"}, Attachment{"b", "eth0"}
	ip, err := allocate(t, dir, p, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	// By hand: b's key on a's record, and a key whose record is gone.
	forged := filepath.Join(dir, indexName(attachmentKey(b), ip))
	if err := os.Link(filepath.Join(dir, ip.String()), forged); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, indexName(attachmentKey(b), net.ParseIP("10.1.0.6")))
	if err := os.WriteFile(stale, []byte("b\neth0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withStore(t, dir, func(s *Store) error {
		freed, err := s.Release(b)
		if len(freed) != 0 {
			t.Errorf("release of b freed %v, which b does not hold", freed)
		}
		return err
	})
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("index name without its record survived a locked read: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ip.String())); err != nil {
		t.Fatalf("a's record: %v", err)
	}
	again, err := allocate(t, dir, p, a, nil)
	if err != nil || !again.Equal(ip) {
		t.Fatalf("a's retried allocation = %v, %v; want %s", again, err, ip)
	}
}

// When the index name cannot be made, the allocation fails whole: no record
// the fast paths could not see is left.
func TestAnAllocationThatCannotBeIndexedLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/29", "10.1.0.1")
	a := Attachment{"a", "eth0"}
	ip := net.ParseIP("10.1.0.4").To4()
	blocker := filepath.Join(dir, indexName(attachmentKey(a), ip))
	if err := os.MkdirAll(filepath.Join(blocker, "busy"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := allocate(t, dir, p, a, ip)
	if err == nil || !strings.Contains(err.Error(), "index allocation of 10.1.0.4") {
		t.Fatalf("err = %v, want the index failure", err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{filepath.Base(blocker)}) {
		t.Fatalf("a failed allocation left %v", got)
	}
}
