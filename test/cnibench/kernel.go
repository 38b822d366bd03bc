package main

import (
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// vethProbe times the kernel's part of every DEL that removes a pod's
// interface: deleting one veth pair over netlink, no exec. It waits for the
// kernel to unregister both ends, which is the cost no plugin's DEL avoids
// while it deletes the link synchronously. Pair i is made as drover's ADD
// makes it (host end up on a bridge in a node namespace, "eth0" up in a pod
// namespace of its own) when the configurations ADD pod i, and deleted when
// they DEL it, so its age and the moments of the shared machine it sees are
// theirs.
type vethProbe struct {
	node   ns.NetNS
	bridge *netlink.Bridge
	pods   map[int]ns.NetNS
	took   []time.Duration
}

func (b *bench) newVethProbe() (*vethProbe, error) {
	node, err := b.newNS()
	if err != nil {
		return nil, err
	}
	p := &vethProbe{node: node, pods: map[int]ns.NetNS{}}
	err = node.Do(func(ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "probebr"
		attrs.Flags = net.FlagUp
		p.bridge = &netlink.Bridge{LinkAttrs: attrs}
		if err := netlink.LinkAdd(p.bridge); err != nil {
			return fmt.Errorf("create probe bridge: %w", err)
		}
		l, err := netlink.LinkByName(attrs.Name)
		if err != nil {
			return fmt.Errorf("probe bridge: %w", err)
		}
		p.bridge.Index = l.Attrs().Index
		return nil
	})
	return p, err
}

// addOne makes pair i.
func (p *vethProbe) addOne(b *bench, i int) error {
	pod, err := b.newNS()
	if err != nil {
		return err
	}
	p.pods[i] = pod
	return p.node.Do(func(ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = fmt.Sprintf("probe%d", i)
		attrs.Flags = net.FlagUp
		attrs.MasterIndex = p.bridge.Index
		veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pod.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create probe veth: %w", err)
		}
		return pod.Do(func(ns.NetNS) error {
			peer, err := netlink.LinkByName("eth0")
			if err != nil {
				return fmt.Errorf("probe peer: %w", err)
			}
			return netlink.LinkSetUp(peer)
		})
	})
}

// deleteOne deletes pair i, looked up by name as a DEL does, and records
// how long the kernel took to delete it.
func (p *vethProbe) deleteOne(_ *bench, i int) error {
	return p.node.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(fmt.Sprintf("probe%d", i))
		if err != nil {
			return fmt.Errorf("probe veth: %w", err)
		}
		start := time.Now()
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("delete probe veth: %w", err)
		}
		p.took = append(p.took, time.Since(start))
		return nil
	})
}
