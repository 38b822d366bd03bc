package main

import (
	"fmt"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// vethDeletions times the kernel's part of every DEL that removes a pod's
// interface: deleting one veth pair over netlink, no exec. It waits for the
// kernel to unregister both ends, which is the cost no plugin's DEL avoids
// while it deletes the link synchronously.
func (b *bench) vethDeletions(n int) ([]time.Duration, error) {
	scratch, err := b.newNS()
	if err != nil {
		return nil, err
	}
	var took []time.Duration
	err = scratch.Do(func(ns.NetNS) error {
		for i := 0; i < n; i++ {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = fmt.Sprintf("probe%d", i)
			veth := &netlink.Veth{LinkAttrs: attrs, PeerName: fmt.Sprintf("peer%d", i)}
			if err := netlink.LinkAdd(veth); err != nil {
				return fmt.Errorf("create probe veth: %w", err)
			}
			if err := netlink.LinkSetUp(veth); err != nil {
				return fmt.Errorf("set probe veth up: %w", err)
			}
			start := time.Now()
			if err := netlink.LinkDel(veth); err != nil {
				return fmt.Errorf("delete probe veth: %w", err)
			}
			took = append(took, time.Since(start))
		}
		return nil
	})
	return took, err
}
