package cniplugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/drover-net/drover/pkg/datapath"
	"github.com/drover-net/drover/pkg/ipam"
)

// Del detaches the container: it removes the veth pair and releases the
// attachment's address. It is idempotent: a missing netns, veth or
// allocation is success, and so is a second DEL. It needs no node state, so
// it works while droverd is down.
//
// It removes nothing but the host veth drover named after the attachment:
// removing it removes the pod end too, so a pod-side drover veth never
// outlives it, and whatever else is in the pod's namespace under CNI_IFNAME
// (an interface that made ADD fail because it was there first, say) is not
// drover's to remove.
func Del(args *skel.CmdArgs) error {
	c, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if args.Netns != "" {
		// DEL works in the node's namespace only, but a CNI_NETNS that is
		// there and is not a network namespace, or cannot be opened, says
		// the runtime and the node disagree about the pod: report it rather
		// than answer success. Only a namespace that is gone is expected.
		err := datapath.CheckNetNS(args.Netns)
		switch {
		case err == nil, errors.Is(err, datapath.ErrNetNSNotFound):
		case errors.Is(err, datapath.ErrNotNetNS):
			return newError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS %q is not a network namespace", args.Netns), err)
		default:
			return newError(types.ErrIOFailure, fmt.Sprintf("cannot open CNI_NETNS %q", args.Netns), err)
		}
	}
	hostVeth := datapath.HostVethName(args.ContainerID, args.IfName)
	err = datapath.DeleteHostVeth(hostVeth, c.conf.Name)
	if err != nil && !errors.Is(err, datapath.ErrLinkNotFound) && !errors.Is(err, datapath.ErrNotOurs) {
		// The address stays allocated: the veth that may carry it is
		// still there. The runtime retries DEL; GC catches the rest.
		return newError(ErrDatapath, "remove host veth "+hostVeth, err)
	}
	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	err = ipam.WithLock(c.storeDir, lockTimeout, func(s *ipam.Store) error {
		_, rerr := s.Release(att)
		return rerr
	})
	if err != nil {
		return ipamError(err)
	}
	return nil
}
