package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-net/drover/pkg/cniconf"
	"github.com/drover-net/drover/pkg/cniplugin"
	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/ipam"
	"github.com/drover-net/drover/pkg/nodestate"
	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

// reconcile brings the node to its wanted state. Each step runs even when an
// earlier one failed, so one broken piece does not freeze the others.
func (a *Agent) reconcile(ctx context.Context) {
	a.beat()
	start := time.Now()
	var errs []error
	writes := 0

	// The underlay is looked up again each time: an address that changed
	// (DHCP, a renumbered node) must reach the VXLAN device and the
	// published annotations without a restart.
	a.followInternalIP()
	if ul, err := a.findUnderlay(); err != nil {
		errs = append(errs, fmt.Errorf("underlay: %w", err))
	} else {
		if !ul.IP.Equal(a.underlay.IP) || ul.Link.Attrs().Index != a.underlay.Link.Attrs().Index {
			a.log.Info("underlay changed", "iface", ul.Link.Attrs().Name, "ip", ul.IP.String(), "was", a.underlay.IP.String())
			a.cacheGen = 0 // the cache records the underlay address too
			if !ul.IP.Equal(a.underlay.IP) {
				if r, ok := a.cfg.Datastore.(datastore.Reconnecter); ok {
					a.log.Info("reconnecting to the datastore from the new underlay address")
					r.Reconnect()
				}
			}
		}
		a.underlay = ul
	}

	vx, w, err := vxlan.Reconcile(vxlan.Config{
		Name: vxlan.DefaultName, VNI: a.cfg.VNI, Port: a.cfg.Port, LocalIP: a.underlay.IP,
		Underlay: a.underlay.Link.Attrs().Index, MTU: a.cfg.MTU, MAC: a.mac, Addr: a.vtepAddr(),
	})
	writes += w
	if err != nil {
		errs = append(errs, fmt.Errorf("vxlan device: %w", err))
	}

	if err := a.publish(ctx); err != nil {
		a.m.DatastoreErrors.Inc()
		errs = append(errs, fmt.Errorf("publish VTEP: %w", err))
	}

	// Until the datastore has delivered its first full view (or a previous
	// run left its peers in the cache), an empty peer list means
	// "unknown", not "none": syncing it would delete every route a previous
	// agent programmed and cut established pod traffic.
	peers, known := a.wantedPeers()
	if known && vx != nil {
		ch, err := overlay.Sync(overlay.Config{
			Device: vxlan.DefaultName, Underlay: a.underlay.Link.Attrs().Index,
			UnderlayNet: a.underlay.Subnet, DirectRouting: a.cfg.DirectRouting,
		}, peers)
		writes += ch.Total()
		if err != nil {
			errs = append(errs, fmt.Errorf("peers: %w", err))
		} else {
			a.m.Peers.Set(float64(len(peers)))
		}
	}

	if a.masq != nil {
		w, err := a.masq.Ensure()
		writes += w
		if err != nil {
			errs = append(errs, fmt.Errorf("masquerade: %w", err))
		}
	}

	if vx != nil {
		if err := a.writeNodeState(vx.MTU); err != nil {
			errs = append(errs, err)
		}
	}
	a.updateIPAMMetrics()

	a.m.ReconcileDuration.Observe(time.Since(start).Seconds())
	a.m.ReconcileWrites.Add(float64(writes))
	if err := errors.Join(errs...); err != nil {
		a.m.ReconcileErrors.Inc()
		a.log.Error("reconcile", "err", err)
	} else if writes > 0 {
		a.log.Info("reconciled", "writes", writes, "peers", len(peers), "took", time.Since(start))
	}
	a.beat()
}

// findUnderlay looks the underlay up as configured. When it was found by
// the Node's InternalIP and no interface holds that address any more, the
// node was renumbered before the cluster says so (kubelet updates the
// InternalIP afterwards, and this node's watch may be on a connection from
// the old address): the link that held it, with its address now, is the
// underlay until the view catches up.
func (a *Agent) findUnderlay() (*Underlay, error) {
	ul, err := FindUnderlay(a.cfg.UnderlayIface, a.ulIP)
	if err == nil || !a.ulHinted || a.underlay == nil {
		return ul, err
	}
	same, lerr := FindUnderlay(a.underlay.Link.Attrs().Name, nil)
	if lerr != nil {
		return nil, fmt.Errorf("%w; and the link that held it: %w", err, lerr)
	}
	return same, nil
}

// followInternalIP takes the own node's InternalIP from the view as the
// underlay address to look for, when that is how the underlay was chosen:
// kubelet updates it when the node is renumbered, and the address found at
// start would then be on no interface.
func (a *Agent) followInternalIP() {
	if !a.ulHinted {
		return
	}
	a.mu.Lock()
	var ip net.IP
	for _, n := range a.view {
		if n.Name == a.cfg.NodeName {
			ip = n.InternalIP
		}
	}
	a.mu.Unlock()
	if ip != nil && !ip.Equal(a.ulIP) {
		a.log.Info("node InternalIP changed; finding the underlay by it", "ip", ip.String(), "was", fmt.Sprint(a.ulIP))
		a.ulIP = ip
	}
}

// wanted is what this node publishes about itself.
func (a *Agent) wanted() datastore.Node {
	return datastore.Node{Name: a.cfg.NodeName, PodCIDR: a.podCIDR, VTEPMAC: a.mac, UnderlayIP: a.underlay.IP}
}

// publish compares the datastore's view of this node with what it should
// say and writes only when they differ: a Node re-created or stripped of
// its annotations, or an underlay address that changed, is repaired on the
// next reconcile, and a restart whose view already matches writes nothing.
// Before the first view nothing is known, so nothing is written; the view's
// arrival kicks a reconcile.
func (a *Agent) publish(ctx context.Context) error {
	a.mu.Lock()
	view, gen := a.view, a.viewGen
	a.mu.Unlock()
	if gen == 0 {
		return nil
	}
	want := a.wanted()
	var have *datastore.Node
	for i := range view {
		if view[i].Name == want.Name {
			have = &view[i]
		}
	}
	if have != nil && sameRecord(*have, want) {
		return nil
	}
	// Published for this view already: the watch has not shown the write
	// yet. Try again on a new view, or after a resync period.
	if gen == a.pubGen && time.Since(a.pubAt) < a.cfg.Resync {
		return nil
	}
	a.pubGen, a.pubAt = gen, time.Now()
	if err := a.cfg.Datastore.Publish(ctx, want); err != nil {
		return err
	}
	a.m.Publishes.Inc()
	what := "missing"
	if have != nil {
		what = fmt.Sprintf("had pod CIDR %v, VTEP MAC %v, underlay %v", have.PodCIDR, have.VTEPMAC, have.UnderlayIP)
	}
	a.log.Info("published VTEP", "pod_cidr", want.PodCIDR.String(), "vtep_mac", want.VTEPMAC.String(), "underlay_ip", want.UnderlayIP.String(), "datastore_record", what)
	return nil
}

func sameRecord(a, b datastore.Node) bool {
	return a.PodCIDR != nil && b.PodCIDR != nil && a.PodCIDR.String() == b.PodCIDR.String() &&
		bytes.Equal(a.VTEPMAC, b.VTEPMAC) && a.UnderlayIP.Equal(b.UnderlayIP)
}

// wantedPeers is the peer set to program, and whether it is known at all:
// the datastore's view once it came, before that the peer cache of the
// previous run. Peers that cannot be programmed safely next to this node and
// each other (overlapping pod CIDRs, shared VTEP MACs) are left out, logged
// and counted.
func (a *Agent) wantedPeers() ([]overlay.Peer, bool) {
	a.mu.Lock()
	view, gen, cached, hasCache := a.view, a.viewGen, a.cached, a.hasCache
	a.mu.Unlock()
	var peers []overlay.Peer
	switch {
	case gen > 0:
		for _, n := range view {
			if n.Name != a.cfg.NodeName && n.Complete() {
				peers = append(peers, overlay.Peer{Name: n.Name, PodCIDR: n.PodCIDR, VTEPMAC: n.VTEPMAC, UnderlayIP: n.UnderlayIP})
			}
		}
		if gen != a.cacheGen {
			if err := a.savePeerCache(peers); err != nil {
				a.log.Warn("peer cache", "err", err)
			} else {
				a.cacheGen = gen
			}
		}
	case hasCache:
		peers = cached
	default:
		return nil, false
	}
	self := overlay.Peer{Name: a.cfg.NodeName, PodCIDR: a.podCIDR, VTEPMAC: a.mac}
	ok, rejected := overlay.Validate(self, a.cfg.ClusterCIDR, peers)
	a.m.PeersRejected.Set(float64(len(rejected)))
	var reasons []string
	for _, r := range rejected {
		reasons = append(reasons, r.String())
	}
	if s := strings.Join(reasons, "; "); s != a.rejected {
		a.rejected = s
		if s != "" {
			a.log.Error("peers rejected; they are not programmed", "count", len(rejected), "why", s)
		}
	}
	return ok, true
}

// writeNodeState writes the plugin's state file, then the conflist: the
// conflist is what makes the runtime call the plugin, so it comes last.
func (a *Agent) writeNodeState(mtu int) error {
	st := nodestate.State{
		Version: nodestate.Version, Node: a.cfg.NodeName, PodCIDR: a.podCIDR.String(), ClusterCIDR: a.cfg.ClusterCIDR.String(),
		MTU: mtu, Gateway: nodestate.FirstAddress(a.podCIDR).String(),
	}
	if cur, err := nodestate.Read(a.cfg.StateFile); err != nil || cur.PodCIDR.String() != st.PodCIDR || cur.Node != st.Node ||
		cur.MTU != st.MTU || cur.ClusterCIDR == nil || cur.ClusterCIDR.String() != st.ClusterCIDR {
		if err := nodestate.Write(a.cfg.StateFile, st); err != nil {
			return fmt.Errorf("node state: %w", err)
		}
	}
	path := filepath.Join(a.cfg.CNIConfDir, a.cfg.CNIConfName)
	wrote, err := cniconf.Write(path, cniconf.Options{NodeState: a.cfg.StateFile, DataDir: a.cfg.IPAMDir, Portmap: a.cfg.Portmap})
	if err != nil {
		return err
	}
	if wrote {
		a.log.Info("CNI config written: the node can serve pods", "path", path)
	}
	a.ready.Store(true)
	return nil
}

func (a *Agent) updateIPAMMetrics() {
	dir := a.cfg.IPAMDir
	if dir == "" {
		dir = cniplugin.DefaultDataDir
	}
	pool := ipam.Pool{Subnet: a.podCIDR, Gateway: nodestate.FirstAddress(a.podCIDR)}
	a.m.IPAMCapacity.Set(float64(pool.Size()))
	// A metric only reads, as STATUS does: no lock, and no store created
	// on a node that has not served a pod yet.
	if free, err := ipam.FreeWithoutLock(filepath.Join(dir, cniconf.NetworkName), pool); err == nil {
		a.m.IPAMAllocated.Set(float64(pool.Size() - free))
	}
}
