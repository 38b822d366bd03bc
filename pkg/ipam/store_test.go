package ipam

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func pool(t *testing.T, cidr, gw string) Pool {
	t.Helper()
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	return Pool{Subnet: n, Gateway: net.ParseIP(gw).To4()}
}

func withStore(t *testing.T, dir string, fn func(*Store) error) {
	t.Helper()
	if err := WithLock(dir, 5*time.Second, fn); err != nil {
		t.Fatal(err)
	}
}

func allocate(t *testing.T, dir string, p Pool, a Attachment, req net.IP) (net.IP, error) {
	t.Helper()
	var ip net.IP
	err := WithLock(dir, 5*time.Second, func(s *Store) error {
		var err error
		ip, err = s.Allocate(p, a, req)
		return err
	})
	return ip, err
}

func TestAllocationNeverHandsOutNetworkGatewayOrBroadcast(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/29", "10.1.0.1") // hosts .1-.6, gateway .1
	if got := p.Size(); got != 5 {
		t.Fatalf("pool size = %d, want 5", got)
	}
	seen := map[string]bool{}
	for i := 0; i < 5; i++ {
		ip, err := allocate(t, dir, p, Attachment{fmt.Sprint("c", i), "eth0"}, nil)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		switch ip.String() {
		case "10.1.0.0", "10.1.0.1", "10.1.0.7":
			t.Fatalf("allocated reserved address %s", ip)
		}
		if seen[ip.String()] {
			t.Fatalf("address %s handed out twice", ip)
		}
		seen[ip.String()] = true
	}
	_, err := allocate(t, dir, p, Attachment{"c-full", "eth0"}, nil)
	if !errorsIs(err, ErrPoolExhausted) {
		t.Fatalf("allocation past capacity: err = %v, want ErrPoolExhausted", err)
	}
}

func TestGatewayInTheMiddleOfThePoolIsSkipped(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/29", "10.1.0.3")
	for i := 0; i < 5; i++ {
		ip, err := allocate(t, dir, p, Attachment{fmt.Sprint("c", i), "eth0"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ip.String() == "10.1.0.3" {
			t.Fatal("allocated the gateway")
		}
	}
}

func TestJustReleasedAddressIsNotReusedAtOnce(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/24", "10.1.0.1")
	a := Attachment{"a", "eth0"}
	first, err := allocate(t, dir, p, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	withStore(t, dir, func(s *Store) error { _, err := s.Release(a); return err })
	second, err := allocate(t, dir, p, Attachment{"b", "eth0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Equal(second) {
		t.Fatalf("released %s was handed out again at once", first)
	}
}

func TestRoundRobinWrapsToTheStartOfThePool(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/29", "10.1.0.1")
	var last Attachment
	for i := 0; i < 5; i++ {
		last = Attachment{fmt.Sprint("c", i), "eth0"}
		if _, err := allocate(t, dir, p, last, nil); err != nil {
			t.Fatal(err)
		}
	}
	withStore(t, dir, func(s *Store) error { _, err := s.Release(Attachment{"c0", "eth0"}); return err })
	ip, err := allocate(t, dir, p, Attachment{"new", "eth0"}, nil)
	if err != nil {
		t.Fatalf("allocation after a release in a full pool: %v", err)
	}
	if ip.String() != "10.1.0.2" {
		t.Fatalf("got %s, want the freed 10.1.0.2", ip)
	}
}

func TestRetriedAllocationReturnsTheSameAddress(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/24", "10.1.0.1")
	a := Attachment{"retry", "eth0"}
	first, _ := allocate(t, dir, p, a, nil)
	again, err := allocate(t, dir, p, a, nil)
	if err != nil || !first.Equal(again) {
		t.Fatalf("retried allocation = %v, %v; want %s", again, err, first)
	}
}

func TestRequestedAddress(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/24", "10.1.0.1")
	ip, err := allocate(t, dir, p, Attachment{"a", "eth0"}, net.ParseIP("10.1.0.77"))
	if err != nil || ip.String() != "10.1.0.77" {
		t.Fatalf("requested 10.1.0.77: got %v, %v", ip, err)
	}
	for _, tc := range []struct{ name, ip string }{
		{"held by another attachment", "10.1.0.77"},
		{"the gateway", "10.1.0.1"},
		{"the network address", "10.1.0.0"},
		{"the broadcast address", "10.1.0.255"},
		{"outside the pool", "10.2.0.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := allocate(t, dir, p, Attachment{"b", "eth0"}, net.ParseIP(tc.ip))
			if !errorsIs(err, ErrAddressUnavailable) {
				t.Fatalf("err = %v, want ErrAddressUnavailable", err)
			}
		})
	}
}

func TestRecordsNameTheirAttachment(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/24", "10.1.0.1")
	ip, _ := allocate(t, dir, p, Attachment{"cid-1", "net1"}, nil)
	data, err := os.ReadFile(filepath.Join(dir, ip.String()))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "cid-1\nnet1\n" {
		t.Fatalf("record = %q", data)
	}
}

func TestReleaseOfNothingSucceeds(t *testing.T) {
	dir := t.TempDir()
	withStore(t, dir, func(s *Store) error {
		freed, err := s.Release(Attachment{"never", "eth0"})
		if len(freed) != 0 {
			t.Errorf("freed %v", freed)
		}
		return err
	})
}

func TestTemporariesOfAKilledHolderAreRemoved(t *testing.T) {
	dir := t.TempDir()
	withStore(t, dir, func(*Store) error { return nil })
	stale := filepath.Join(dir, tmpPrefix+"123")
	if err := os.WriteFile(stale, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	withStore(t, dir, func(s *Store) error { _, err := s.Free(pool(t, "10.1.0.0/29", "10.1.0.1")); return err })
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temporary file survived: %v", err)
	}
}

func TestLockTimesOut(t *testing.T) {
	dir := t.TempDir()
	held := make(chan struct{})
	release := make(chan struct{})
	go func() {
		_ = WithLock(dir, time.Second, func(*Store) error { close(held); <-release; return nil })
	}()
	<-held
	defer close(release)
	err := WithLock(dir, 50*time.Millisecond, func(*Store) error { return nil })
	if !errorsIs(err, ErrLockTimeout) {
		t.Fatalf("err = %v, want ErrLockTimeout", err)
	}
}

func TestConcurrentAllocationsAreDistinct(t *testing.T) {
	dir := t.TempDir()
	p := pool(t, "10.1.0.0/24", "10.1.0.1")
	const n = 100
	ips := make([]net.IP, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each goroutine opens its own store, so flock sees distinct
			// open files, as separate plugin processes do.
			ips[i], errs[i] = allocate(t, dir, p, Attachment{fmt.Sprint("c", i), "eth0"}, nil)
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i, ip := range ips {
		if errs[i] != nil {
			t.Fatalf("allocation %d: %v", i, errs[i])
		}
		if j, dup := seen[ip.String()]; dup {
			t.Fatalf("%s given to %d and %d", ip, j, i)
		}
		seen[ip.String()] = i
	}
	withStore(t, dir, func(s *Store) error {
		free, err := s.Free(p)
		if free != p.Size()-n {
			t.Errorf("free = %d, want %d", free, p.Size()-n)
		}
		return err
	})
}

func TestFreeWithoutLockCreatesNothing(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "net")
	p := pool(t, "10.1.0.0/29", "10.1.0.1")
	free, err := FreeWithoutLock(dir, p)
	if err != nil || free != p.Size() {
		t.Fatalf("missing store: free = %d, %v; want %d, nil", free, err, p.Size())
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("counting a missing store created %v", entries)
	}

	if _, err := allocate(t, dir, p, Attachment{"c1", "eth0"}, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(dir)
	free, err = FreeWithoutLock(dir, p)
	if err != nil || free != p.Size()-1 {
		t.Fatalf("one allocation: free = %d, %v; want %d, nil", free, err, p.Size()-1)
	}
	if after, _ := os.ReadDir(dir); len(after) != len(before) {
		t.Fatalf("counting changed the store: %v -> %v", before, after)
	}
}
