package agent

import (
	"context"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/overlay"
)

// floodRoutes adds and deletes count drover routes in n: count RTM_DELROUTE
// events that concern drover, more than the subscription's channel holds.
func floodRoutes(t *testing.T, n ns.NetNS, count int) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		dummy, err := netlink.LinkByName("flood0")
		if err != nil {
			return err
		}
		for i := 0; i < count; i++ {
			r := &netlink.Route{LinkIndex: dummy.Attrs().Index, Protocol: overlay.RouteProtocol,
				Dst: &net.IPNet{IP: net.IPv4(10, 99, byte(i/250), byte(i%250)), Mask: net.CIDRMask(32, 32)}}
			if err := netlink.RouteAdd(r); err != nil {
				return err
			}
			if err := netlink.RouteDel(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("flood routes: %v", err)
	}
}

func TestResubscribingToNetlinkLeaksNoGoroutines(t *testing.T) {
	n := testns.New(t)
	err := n.Do(func(ns.NetNS) error {
		d := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "flood0"}}
		if err := netlink.LinkAdd(d); err != nil {
			return err
		}
		return netlink.LinkSetUp(d)
	})
	if err != nil {
		t.Fatal(err)
	}
	handle, err := netns.GetFromPath(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer handle.Close()

	before := runtime.NumGoroutine()
	const rounds = 30
	for i := 0; i < rounds; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		// The first kick blocks, as a busy agent would, while events pile
		// up behind it and fill the subscription's channels.
		blocked, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		kick := func() {
			once.Do(func() { close(blocked) })
			<-release
		}
		returned := make(chan struct{})
		go func() {
			subscribeOnce(ctx, handle, kick)
			close(returned)
		}()
		// The subscriptions open asynchronously: flood until the loop is
		// stuck in kick, then some more to fill its channel.
		deadline := time.Now().Add(20 * time.Second)
		for stuck := false; !stuck; {
			floodRoutes(t, n, 10)
			select {
			case <-blocked:
				stuck = true
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatal("no route event reached the subscription")
			}
		}
		floodRoutes(t, n, 150)
		cancel()
		close(release)
		select {
		case <-returned:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: subscribeOnce did not return after its context ended", i)
		}
	}
	// Whatever a round started has ended once it returned; allow a little
	// slack for goroutines of the runtime and the test framework.
	var after int
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before+3 {
			return
		}
	}
	buf := make([]byte, 1<<20)
	t.Fatalf("goroutines grew from %d to %d over %d resubscriptions:\n%s", before, after, rounds,
		firstLines(string(buf[:runtime.Stack(buf, true)]), 60))
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
