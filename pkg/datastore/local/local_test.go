package local

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/drover-net/drover/pkg/datastore"
)

func TestConcurrentClaimsAreDistinctAndStable(t *testing.T) {
	dir := t.TempDir()
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	const n = 20
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, _ := New(dir, cluster, 24) // one store per agent
			c, err := s.PodCIDR(context.Background(), fmt.Sprintf("node-%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = c.String()
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, c := range got {
		if seen[c] {
			t.Fatalf("%s claimed twice", c)
		}
		seen[c] = true
		s, _ := New(dir, cluster, 24)
		again, err := s.PodCIDR(context.Background(), fmt.Sprintf("node-%d", i))
		if err != nil || again.String() != c {
			t.Fatalf("node-%d asked again: %v %v, first %s", i, again, err, c)
		}
	}
}

func TestWatchSeesPublishAndDelete(t *testing.T) {
	dir := t.TempDir()
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	s, _ := New(dir, cluster, 24)
	s.poll = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	views := make(chan []datastore.Node, 16)
	go func() { _ = s.Watch(ctx, func(v []datastore.Node) { views <- v }) }()
	next := func() []datastore.Node {
		select {
		case v := <-views:
			return v
		case <-time.After(5 * time.Second):
			t.Fatal("no view")
			return nil
		}
	}
	if v := next(); len(v) != 0 {
		t.Fatalf("initial view of an empty store: %v", v)
	}
	cidr, _ := s.PodCIDR(ctx, "a")
	mac, _ := net.ParseMAC("0a:00:00:00:00:01")
	if err := s.Publish(ctx, datastore.Node{Name: "a", PodCIDR: cidr, VTEPMAC: mac, UnderlayIP: net.IPv4(198, 51, 100, 11)}); err != nil {
		t.Fatal(err)
	}
	var v []datastore.Node
	for v = next(); len(v) != 1 || !v[0].Complete(); v = next() {
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if v := next(); len(v) != 0 {
		t.Fatalf("after delete: %v", v)
	}
}
