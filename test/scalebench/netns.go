package scalebench

import (
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
)

func netnsHandle(n ns.NetNS) (netns.NsHandle, error) { return netns.GetFromPath(n.Path()) }
