package cniplugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/drover-net/drover/pkg/ipam"
)

// Status reports whether ADD can succeed now: the node state is present and
// valid, and the pool has a free address. It answers code 50 otherwise. It
// only reads: no lock, so it never waits behind ADDs, and no write, so a
// runtime polling it on a node that serves no pod yet leaves no store behind.
func Status(args *skel.CmdArgs) error {
	c, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	st, err := c.nodeState()
	if err != nil {
		return newError(types.ErrPluginNotAvailable, "node state not ready", err)
	}
	pool := ipam.Pool{Subnet: st.PodCIDR, Gateway: st.Gateway}
	free, err := ipam.FreeWithoutLock(c.storeDir, pool)
	if err != nil {
		return newError(types.ErrPluginNotAvailable, "IPAM store unreadable", err)
	}
	if free <= 0 {
		return newError(types.ErrPluginNotAvailable, fmt.Sprintf("no free pod address: all of %s are allocated", st.PodCIDR), nil)
	}
	return nil
}
