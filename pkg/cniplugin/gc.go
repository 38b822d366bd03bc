package cniplugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/drover-net/drover/pkg/datapath"
	"github.com/drover-net/drover/pkg/ipam"
)

// GC releases every allocation and removes every host veth of this network
// whose attachment is not in cni.dev/valid-attachments. It never touches
// another network's veths, even on the same bridge: a veth is this network's
// when its alias names the network (ADD sets it), or when it has no alias and
// is named after an attachment this network's store records (an ADD killed
// between creating the veth and setting its alias; ADD allocates before it
// creates the veth, so such a veth always has its record).
//
// Order matters for crash safety, as in DEL: a stale pod's veth goes first
// and its address record after, so a GC killed in between leaves a record
// without a pod (the next GC frees it), never a free address still carried
// by a pod (which the next ADD would hand out a second time). The store lock
// is held across both sweeps so no ADD allocates in between.
func GC(args *skel.CmdArgs) error {
	c, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	network := c.conf.Name
	valid := make(map[ipam.Attachment]bool, len(c.conf.ValidAttachments))
	validVeth := make(map[string]bool, len(c.conf.ValidAttachments))
	for _, a := range c.conf.ValidAttachments {
		valid[ipam.Attachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
		validVeth[datapath.HostVethName(a.ContainerID, a.IfName)] = true
	}

	var vethErr error
	err = ipam.WithLock(c.storeDir, lockTimeout, func(s *ipam.Store) error {
		recs, lerr := s.List()
		if lerr != nil {
			return lerr
		}
		aliased, lerr := datapath.NetworkVeths(network)
		if lerr != nil {
			vethErr = newError(ErrDatapath, "list veths of network "+network, lerr)
			return nil
		}
		stale := map[string]bool{}
		for _, name := range aliased {
			if !validVeth[name] {
				stale[name] = true
			}
		}
		for _, r := range recs {
			if !valid[r.Attachment] {
				stale[datapath.HostVethName(r.Attachment.ContainerID, r.Attachment.IfName)] = true
			}
		}
		var errs []error
		for name := range stale {
			derr := datapath.DeleteHostVeth(name, network)
			if derr != nil && !errors.Is(derr, datapath.ErrLinkNotFound) && !errors.Is(derr, datapath.ErrNotOurs) {
				errs = append(errs, derr)
			}
		}
		if jerr := errors.Join(errs...); jerr != nil {
			// Keep the records: an address whose veth could not be removed
			// may still be in use.
			vethErr = newError(ErrDatapath, fmt.Sprintf("remove %d stale veths", len(errs)), jerr)
			return nil
		}
		_, rerr := s.ReleaseIf(func(r ipam.Record) bool { return !valid[r.Attachment] })
		return rerr
	})
	if err != nil {
		return ipamError(err)
	}
	return vethErr
}
