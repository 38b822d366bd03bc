package cniplugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/drover-net/drover/pkg/datapath"
	"github.com/drover-net/drover/pkg/ipam"
)

// GC releases every allocation and removes every host veth of this network
// whose attachment is not in cni.dev/valid-attachments.
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
	valid := make(map[ipam.Attachment]bool, len(c.conf.ValidAttachments))
	validVeth := make(map[string]bool, len(c.conf.ValidAttachments))
	for _, a := range c.conf.ValidAttachments {
		valid[ipam.Attachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
		validVeth[datapath.HostVethName(a.ContainerID, a.IfName)] = true
	}

	var vethErr error
	err = ipam.WithLock(c.storeDir, lockTimeout, func(s *ipam.Store) error {
		veths, err := datapath.BridgePorts(c.bridge)
		if err != nil {
			vethErr = newError(ErrDatapath, "list veths of bridge "+c.bridge, err)
			return nil
		}
		var errs []error
		for _, name := range veths {
			if validVeth[name] {
				continue
			}
			if err := datapath.DeleteHostVeth(name); err != nil && !errors.Is(err, datapath.ErrLinkNotFound) {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			// Keep the records: an address whose veth could not be removed
			// may still be in use.
			vethErr = newError(ErrDatapath, fmt.Sprintf("remove %d stale veths", len(errs)), err)
			return nil
		}
		_, err = s.ReleaseIf(func(r ipam.Record) bool { return !valid[r.Attachment] })
		return err
	})
	if err != nil {
		return ipamError(err)
	}
	return vethErr
}
