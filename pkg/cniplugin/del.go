package cniplugin

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/drover-net/drover/pkg/datapath"
	"github.com/drover-net/drover/pkg/ipam"
)

// Del detaches the container: it removes the veth pair and releases the
// attachment's address. It is idempotent: a missing netns, veth or
// allocation is success, and so is a second DEL. It needs no node state, so
// it works while droverd is down.
func Del(args *skel.CmdArgs) error {
	c, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	err = datapath.DeleteHostVeth(datapath.HostVethName(args.ContainerID, args.IfName))
	if errors.Is(err, datapath.ErrLinkNotFound) && args.Netns != "" {
		// No host end: nothing of ours is left unless the pod end was
		// orphaned in the netns by hand. A missing netns is fine too.
		err = datapath.DeletePodLink(args.Netns, args.IfName)
	}
	if err != nil && !errors.Is(err, datapath.ErrLinkNotFound) {
		return newError(ErrDatapath, "remove pod interface "+args.IfName, err)
	}
	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	err = ipam.WithLock(c.storeDir, lockTimeout, func(s *ipam.Store) error {
		_, err := s.Release(att)
		return err
	})
	if err != nil {
		return ipamError(err)
	}
	return nil
}
