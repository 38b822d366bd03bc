package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/nodestate"
)

// waitPodCIDR asks the datastore until it answers, with capped backoff: the
// API server may be down when the agent starts, or the controller manager
// slow to allocate. Each attempt is a sign of progress for /healthz. When
// the datastore cannot answer at all (not: answers "none yet") and the node
// state file holds this node's pod CIDR from a previous run, that one is
// adopted, so a restart during an API outage keeps the node serving and its
// data path repaired; it reports whether it adopted.
func (a *Agent) waitPodCIDR(ctx context.Context) (*net.IPNet, bool, error) {
	backoff := 200 * time.Millisecond
	for {
		a.beat()
		cidr, err := a.cfg.Datastore.PodCIDR(ctx, a.cfg.NodeName)
		a.beat()
		if err == nil {
			return cidr, false, nil
		}
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		a.m.DatastoreErrors.Inc()
		if !errors.Is(err, datastore.ErrNoPodCIDR) && !errors.Is(err, datastore.ErrNoFreeSubnet) {
			if prev := a.previousPodCIDR(); prev != nil {
				a.log.Warn("datastore unreachable; adopting the pod CIDR of this node's previous run", "cidr", prev.String(), "err", err)
				return prev, true, nil
			}
		}
		a.log.Warn("pod CIDR not known yet", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// previousPodCIDR is the pod CIDR in the node state file when the file was
// written for this node and this cluster CIDR, else nil.
func (a *Agent) previousPodCIDR() *net.IPNet {
	st, err := nodestate.Read(a.cfg.StateFile)
	if err != nil || st.Node != a.cfg.NodeName || st.ClusterCIDR == nil ||
		st.ClusterCIDR.String() != a.cfg.ClusterCIDR.String() {
		return nil
	}
	return st.PodCIDR
}

// confirmPodCIDR keeps asking the datastore after an adoption. The same
// answer ends it; a different one ends the agent with an error (and the
// DaemonSet restarts it onto the new subnet): pods already hold addresses
// of the old one, and the bridge, the node state and every peer's route
// follow the pod CIDR.
func (a *Agent) confirmPodCIDR(ctx context.Context) {
	backoff := time.Second
	for {
		cidr, err := a.cfg.Datastore.PodCIDR(ctx, a.cfg.NodeName)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && cidr.String() == a.podCIDR.String():
			a.log.Info("datastore confirms the adopted pod CIDR", "cidr", cidr.String())
			return
		case err == nil:
			a.fatal <- fmt.Errorf("the datastore says node %s has pod CIDR %s, not %s adopted from the previous run: restarting to take it", a.cfg.NodeName, cidr, a.podCIDR)
			return
		}
		a.m.DatastoreErrors.Inc()
		a.log.Warn("pod CIDR still unconfirmed", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
