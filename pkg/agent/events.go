package agent

import (
	"context"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

// watchNetlink kicks a reconcile when someone changes what the agent owns: a
// drover route removed, a neighbour or FDB entry of the VXLAN device
// changed, the device deleted or set down. The periodic resync catches
// anything missed here (for example while a subscription is re-opened).
func (a *Agent) watchNetlink(ctx context.Context, ns netns.NsHandle) {
	for ctx.Err() == nil {
		subscribeOnce(ctx, ns, a.Kick)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// subscribeOnce subscribes to link, route and neighbour events in ns and
// calls kick for the ones that concern drover, until ctx ends or a
// subscription reports an error. It returns only once netlink's receiver
// goroutines have ended: each of them sends every update with a blocking
// `ch <- update` and closes ch only after its socket is closed, so returning
// while a channel is full would leave its sender blocked forever, one more
// goroutine per resubscription. Closing done closes the sockets; draining
// each channel until it is closed lets the senders finish.
func subscribeOnce(ctx context.Context, ns netns.NsHandle, kick func()) {
	done := make(chan struct{})
	var drains []func()
	defer func() {
		close(done)
		for _, drain := range drains {
			drain()
		}
	}()
	failed := make(chan struct{}, 1)
	onErr := func(error) {
		// Called from netlink's goroutines, also after done is closed
		// (the closed socket's Receive fails): never block there.
		select {
		case failed <- struct{}{}:
		default:
		}
	}
	links := make(chan netlink.LinkUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	// A subscription that returned an error started no receiver, so its
	// channel is never closed and must not be drained.
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		return
	}
	drains = append(drains, func() {
		for range links {
		}
	})
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		return
	}
	drains = append(drains, func() {
		for range routes {
		}
	})
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		return
	}
	drains = append(drains, func() {
		for range neighs {
		}
	})
	vxIndex := func() int {
		if vx, err := vxlan.Get(vxlan.DefaultName); err == nil {
			return vx.Index
		}
		return -1
	}
	idx := vxIndex()
	for {
		select {
		case <-ctx.Done():
			return
		case <-failed:
			return
		case u, ok := <-links:
			if !ok {
				return
			}
			if u.Attrs().Name == vxlan.DefaultName {
				idx = vxIndex()
				kick()
			}
		case u, ok := <-routes:
			if !ok {
				return
			}
			if u.Protocol == overlay.RouteProtocol && u.Type == unix.RTM_DELROUTE {
				kick()
			}
		case u, ok := <-neighs:
			if !ok {
				return
			}
			if u.LinkIndex == idx && u.Type == unix.RTM_DELNEIGH {
				kick()
			}
		}
	}
}
