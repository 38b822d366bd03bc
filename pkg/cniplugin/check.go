package cniplugin

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/drover-net/drover/pkg/datapath"
	"github.com/drover-net/drover/pkg/ipam"
)

// Check verifies the attachment still matches prevResult: the host veth on
// the bridge, the pod interface with its MAC, address and routes, and the
// address still allocated to this attachment.
func Check(args *skel.CmdArgs) error {
	c, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if c.conf.RawPrevResult == nil {
		return newError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", nil)
	}
	if err := version.ParsePrevResult(&c.conf.NetConf); err != nil {
		return newError(types.ErrDecodingFailure, "decode prevResult", err)
	}
	prev, err := current.NewResultFromResult(c.conf.PrevResult)
	if err != nil {
		return newError(types.ErrDecodingFailure, "convert prevResult", err)
	}

	e := datapath.Expect{
		Bridge:    c.bridge,
		NetNSPath: args.Netns,
		IfName:    args.IfName,
		HostVeth:  datapath.HostVethName(args.ContainerID, args.IfName),
	}
	podIdx := -1
	for i, intf := range prev.Interfaces {
		if intf.Name == args.IfName && intf.Sandbox != "" {
			podIdx = i
			e.MAC = intf.Mac
		}
	}
	if podIdx < 0 {
		return newError(ErrCheckFailed, fmt.Sprintf("prevResult has no sandbox interface %s", args.IfName), nil)
	}
	var ips []net.IP
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface != podIdx {
			continue
		}
		if ipc.Address.IP.To4() == nil {
			continue
		}
		a := ipc.Address
		e.Addrs = append(e.Addrs, &a)
		ips = append(ips, ipc.Address.IP.To4())
	}
	for _, r := range prev.Routes {
		if r.Dst.IP.To4() == nil {
			continue
		}
		d := r.Dst
		e.Routes = append(e.Routes, &d)
		e.Gateways = append(e.Gateways, r.GW)
	}

	if err := datapath.CheckPod(e); err != nil {
		switch {
		case errors.Is(err, datapath.ErrNetNSNotFound):
			return newError(types.ErrUnknownContainer, "container network namespace is gone", err)
		case errors.Is(err, datapath.ErrNotNetNS):
			return newError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS %q is not a network namespace", args.Netns), err)
		case errors.Is(err, datapath.ErrLinkNotFound), errors.Is(err, datapath.ErrMismatch):
			return newError(ErrCheckFailed, "attachment differs from prevResult", err)
		default:
			return newError(ErrDatapath, "inspect attachment", err)
		}
	}

	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	var held []net.IP
	err = ipam.WithLock(c.storeDir, lockTimeout, func(s *ipam.Store) error {
		held, err = s.Held(att)
		return err
	})
	if err != nil {
		return ipamError(err)
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(held, ip.Equal) {
			return newError(ErrCheckFailed, fmt.Sprintf("address %s is not allocated to %s", ip, att), nil)
		}
	}
	return nil
}
