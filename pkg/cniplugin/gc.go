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

	// The lock is held across both sweeps so a DEL or ADD of the same store
	// does not interleave with them.
	err = ipam.WithLock(c.storeDir, lockTimeout, func(s *ipam.Store) error {
		if _, err := s.ReleaseIf(func(r ipam.Record) bool { return !valid[r.Attachment] }); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return ipamError(err)
	}

	veths, err := datapath.BridgePorts(c.bridge)
	if err != nil {
		return newError(ErrDatapath, "list veths of bridge "+c.bridge, err)
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
		return newError(ErrDatapath, fmt.Sprintf("remove %d stale veths", len(errs)), err)
	}
	return nil
}
