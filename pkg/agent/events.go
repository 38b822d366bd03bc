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
		a.subscribeOnce(ctx, ns)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (a *Agent) subscribeOnce(ctx context.Context, ns netns.NsHandle) {
	done := make(chan struct{})
	defer close(done)
	failed := make(chan struct{}, 3)
	onErr := func(error) {
		select {
		case failed <- struct{}{}:
		default:
		}
	}
	links := make(chan netlink.LinkUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		a.log.Warn("netlink link subscription", "err", err)
		return
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		a.log.Warn("netlink route subscription", "err", err)
		return
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		a.log.Warn("netlink neighbour subscription", "err", err)
		return
	}
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
				a.Kick()
			}
		case u, ok := <-routes:
			if !ok {
				return
			}
			if u.Protocol == overlay.RouteProtocol && u.Type == unix.RTM_DELROUTE {
				a.Kick()
			}
		case u, ok := <-neighs:
			if !ok {
				return
			}
			if u.LinkIndex == idx && u.Type == unix.RTM_DELNEIGH {
				a.Kick()
			}
		}
	}
}
