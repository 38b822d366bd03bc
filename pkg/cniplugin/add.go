package cniplugin

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netns"

	"github.com/drover-net/drover/pkg/datapath"
	"github.com/drover-net/drover/pkg/ipam"
)

// Add attaches the container to the node's pod network and prints the result
// in the config's cniVersion. A failed ADD leaves no veth and no allocation;
// when undoing its work fails too, the error it returns says so.
func Add(args *skel.CmdArgs) (err error) {
	c, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := checkNetNS(args.Netns); err != nil {
		return err
	}
	st, err := c.nodeState()
	if err != nil {
		return stateError(err)
	}
	pool := ipam.Pool{Subnet: st.PodCIDR, Gateway: st.Gateway}
	var requested net.IP
	if len(c.ips) == 1 {
		requested = c.ips[0]
		// Refused before anything is touched on the node.
		if !pool.Usable(requested) {
			return newError(ErrAddressUnavailable, "requested address unavailable",
				fmt.Errorf("%s is not an assignable address of %s (gateway %s)", requested, st.PodCIDR, st.Gateway))
		}
	}

	gw := &net.IPNet{IP: st.Gateway, Mask: st.PodCIDR.Mask}
	if err := datapath.EnableIPv4Forwarding(); err != nil {
		return newError(ErrDatapath, "enable forwarding", err)
	}
	br, err := datapath.EnsureBridge(datapath.BridgeConfig{Name: c.bridge, Gateway: gw, MTU: st.MTU})
	if err != nil {
		return newError(ErrDatapath, "set up bridge "+c.bridge, err)
	}

	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	var ip net.IP
	err = ipam.WithLock(c.storeDir, lockTimeout, func(s *ipam.Store) error {
		var aerr error
		ip, aerr = s.Allocate(pool, att, requested)
		return aerr
	})
	if err != nil {
		return ipamError(err)
	}
	// From here on every failure, including one to print the result, undoes
	// the allocation and the veth. The allocation comes first and the veth
	// after, so whatever a SIGKILL leaves behind has a record naming it,
	// which is how GC and DEL find it.
	hostVeth := datapath.HostVethName(args.ContainerID, args.IfName)
	succeeded := false
	defer func() {
		if succeeded {
			return
		}
		if uerr := undoAdd(c, att, hostVeth); uerr != nil {
			err = withUndoError(err, uerr)
		}
	}()

	addr := &net.IPNet{IP: ip, Mask: st.PodCIDR.Mask}
	host, pod, err := datapath.SetupPod(br, datapath.Pod{
		NetNSPath: args.Netns,
		IfName:    args.IfName,
		HostVeth:  hostVeth,
		Owner:     datapath.Owner{Network: c.conf.Name, ContainerID: args.ContainerID, IfName: args.IfName},
		MTU:       st.MTU,
		MAC:       c.mac,
		Addr:      addr,
		Gateway:   st.Gateway,
		Hairpin:   c.hairpin,
	})
	if err != nil {
		return newError(ErrDatapath, "set up pod interface "+args.IfName, err)
	}

	sandboxIdx := 1
	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: host.Name, Mac: host.MAC},
			{Name: pod.Name, Mac: pod.MAC, Sandbox: args.Netns},
		},
		IPs: []*current.IPConfig{{
			Interface: &sandboxIdx,
			Address:   *addr,
			Gateway:   st.Gateway,
		}},
		Routes: []*types.Route{{
			Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			GW:  st.Gateway,
		}},
		DNS: c.conf.DNS,
	}
	// A result the runtime never read is an ADD it counts as failed: undo it
	// like any other failure rather than leave a pod wired that the runtime
	// does not know about.
	if err := types.PrintResult(result, c.conf.CNIVersion); err != nil {
		return newError(types.ErrIOFailure, "print result", err)
	}
	succeeded = true
	return nil
}

// undoAdd removes what a failed ADD made, in DEL's order: the veth first and
// its address after, so an undo that stops half-way never frees an address a
// pod still carries. A veth that cannot be removed therefore keeps its
// address; DEL or GC frees both later.
func undoAdd(c *config, att ipam.Attachment, hostVeth string) error {
	err := datapath.DeleteHostVeth(hostVeth, c.conf.Name)
	if err != nil && !errors.Is(err, datapath.ErrLinkNotFound) && !errors.Is(err, datapath.ErrNotOurs) {
		return fmt.Errorf("undo ADD of %s: remove veth %s (its address stays allocated until DEL or GC): %w", att, hostVeth, err)
	}
	err = ipam.WithLock(c.storeDir, lockTimeout, func(s *ipam.Store) error {
		_, rerr := s.Release(att)
		return rerr
	})
	if err != nil {
		return fmt.Errorf("undo ADD of %s: release its address: %w", att, err)
	}
	return nil
}

// checkNetNS refuses a namespace that does not exist or is the plugin's own:
// skel only checks the latter after ADD has run, which would program the
// node's own namespace as if it were a pod.
func checkNetNS(path string) error {
	target, err := datapath.OpenNetNS(path)
	switch {
	case errors.Is(err, datapath.ErrNotNetNS):
		return newError(types.ErrUnknownContainer, fmt.Sprintf("%q is not a network namespace", path), err)
	case errors.Is(err, datapath.ErrNetNSNotFound):
		return newError(types.ErrUnknownContainer, fmt.Sprintf("network namespace %q does not exist", path), err)
	case err != nil:
		return newError(types.ErrUnknownContainer, fmt.Sprintf("open network namespace %q", path), err)
	}
	defer target.Close()
	self, err := netns.Get()
	if err != nil {
		return newError(types.ErrInternal, "open the plugin's own network namespace", err)
	}
	defer self.Close()
	if self.Equal(target) {
		return newError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is the plugin's own network namespace, not a container's", nil)
	}
	return nil
}

func ipamError(err error) error {
	switch {
	case errors.Is(err, ipam.ErrPoolExhausted):
		return newError(ErrPoolExhausted, "no free pod address on this node", err)
	case errors.Is(err, ipam.ErrAddressUnavailable):
		return newError(ErrAddressUnavailable, "requested address unavailable", err)
	case errors.Is(err, ipam.ErrLockTimeout):
		return newError(types.ErrTryAgainLater, "IPAM store busy", err)
	default:
		return newError(ErrIPAMStore, "IPAM store failure", err)
	}
}
