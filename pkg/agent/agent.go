// Package agent is droverd's node loop: it learns the node's pod CIDR from
// the datastore, sets up the VXLAN device, publishes its VTEP, programs every
// peer, keeps the masquerade rules, and writes the node state and CNI
// conflist once the node can serve pods. It reconciles on peer changes,
// netlink events and a periodic resync. Stopping it leaves the data path as
// it is, so a restart never interrupts pod traffic.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/drover-net/drover/pkg/cniconf"
	"github.com/drover-net/drover/pkg/cniplugin"
	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/ipam"
	"github.com/drover-net/drover/pkg/masq"
	"github.com/drover-net/drover/pkg/nodestate"
	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

// Config is everything the agent needs; cmd/droverd fills it from flags.
type Config struct {
	NodeName      string
	Datastore     datastore.Datastore
	UnderlayIface string
	UnderlayIP    net.IP
	VNI           int
	Port          int
	ClusterCIDR   *net.IPNet
	MTU           int // 0: underlay MTU - VXLAN overhead
	DirectRouting bool
	Masquerade    bool
	StateFile     string
	IPAMDir       string // the plugin's dataDir
	CNIConfDir    string
	CNIConfName   string
	Portmap       bool
	Resync        time.Duration
	Log           *slog.Logger
	Metrics       *Metrics
}

// Agent runs the loop.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	m        *Metrics
	underlay *Underlay
	podCIDR  *net.IPNet
	mac      net.HardwareAddr

	mu        sync.Mutex
	peers     []overlay.Peer
	peersSeen bool // the datastore delivered its initial view

	trigger   chan struct{}
	published bool
	ready     atomic.Bool
	lastLoop  atomic.Int64 // unix nanos of the last finished reconcile
	masq      *masq.Rules
}

// New validates cfg.
func New(cfg Config) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("node name is empty: set --node-name or NODE_NAME")
	}
	if cfg.Datastore == nil {
		return nil, errors.New("no datastore")
	}
	if cfg.ClusterCIDR == nil {
		return nil, errors.New("cluster CIDR is required: set --cluster-cidr")
	}
	if cfg.VNI <= 0 || cfg.VNI >= 1<<24 {
		return nil, fmt.Errorf("VNI %d is outside 1..16777215", cfg.VNI)
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("UDP port %d is outside 1..65535", cfg.Port)
	}
	if cfg.MTU != 0 && (cfg.MTU < 576 || cfg.MTU > 9000) {
		return nil, fmt.Errorf("MTU %d is outside 576..9000", cfg.MTU)
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	return &Agent{cfg: cfg, log: cfg.Log, m: cfg.Metrics, trigger: make(chan struct{}, 1)}, nil
}

// Ready reports whether the node state and conflist are written.
func (a *Agent) Ready() bool { return a.ready.Load() }

// Healthy reports whether the loop finished a reconcile recently.
func (a *Agent) Healthy() bool {
	last := a.lastLoop.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < 3*a.cfg.Resync+5*time.Second
}

// Kick asks for a reconcile soon; many kicks collapse into one.
func (a *Agent) Kick() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// Run sets the node up and reconciles until ctx ends. On return the data
// path stays as it is.
func (a *Agent) Run(ctx context.Context) error {
	ulIP := a.cfg.UnderlayIP
	if ulIP == nil && a.cfg.UnderlayIface == "" {
		// Kubernetes: the Node's InternalIP is the address its peers know
		// it by; without one, fall back to the default route's interface.
		if h, ok := a.cfg.Datastore.(datastore.UnderlayHinter); ok {
			ip, err := h.UnderlayIP(ctx, a.cfg.NodeName)
			if err != nil {
				a.log.Warn("node InternalIP unknown; using the default route's interface", "err", err)
			}
			ulIP = ip
		}
	}
	var err error
	if a.underlay, err = FindUnderlay(a.cfg.UnderlayIface, ulIP); err != nil {
		return err
	}
	a.mac = vxlan.MACForNode(a.cfg.NodeName)
	a.log.Info("underlay", "iface", a.underlay.Link.Attrs().Name, "ip", a.underlay.IP, "vtep_mac", a.mac)

	if a.podCIDR, err = a.waitPodCIDR(ctx); err != nil {
		return err
	}
	if !a.cfg.ClusterCIDR.Contains(a.podCIDR.IP) {
		return fmt.Errorf("pod CIDR %s of node %s is outside the cluster CIDR %s", a.podCIDR, a.cfg.NodeName, a.cfg.ClusterCIDR)
	}
	a.log.Info("pod CIDR", "cidr", a.podCIDR)
	if a.cfg.Masquerade {
		if a.masq, err = masq.New(a.cfg.ClusterCIDR); err != nil {
			return err
		}
	}

	go func() {
		err := a.cfg.Datastore.Watch(ctx, a.onNodes)
		if err != nil && ctx.Err() == nil {
			a.log.Error("datastore watch ended", "err", err)
		}
	}()
	// The namespace of the calling thread: goroutines do not inherit it, so
	// the subscriptions name it explicitly.
	self, err := netns.Get()
	if err != nil {
		return fmt.Errorf("own network namespace: %w", err)
	}
	defer self.Close()
	go a.watchNetlink(ctx, self)

	tick := time.NewTicker(a.cfg.Resync)
	defer tick.Stop()
	a.reconcile(ctx)
	for {
		select {
		case <-ctx.Done():
			a.log.Info("stopping; the data path stays in place")
			return nil
		case <-tick.C:
		case <-a.trigger:
		}
		a.reconcile(ctx)
	}
}

// waitPodCIDR asks the datastore until it answers, with capped backoff: the
// API server may be down when the agent starts.
func (a *Agent) waitPodCIDR(ctx context.Context) (*net.IPNet, error) {
	backoff := 200 * time.Millisecond
	for {
		cidr, err := a.cfg.Datastore.PodCIDR(ctx, a.cfg.NodeName)
		if err == nil {
			return cidr, nil
		}
		a.m.DatastoreErrors.Inc()
		a.log.Warn("pod CIDR not known yet", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// onNodes receives the datastore's full view.
func (a *Agent) onNodes(nodes []datastore.Node) {
	var peers []overlay.Peer
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName || !n.Complete() {
			continue
		}
		peers = append(peers, overlay.Peer{Name: n.Name, PodCIDR: n.PodCIDR, VTEPMAC: n.VTEPMAC, UnderlayIP: n.UnderlayIP})
	}
	a.mu.Lock()
	a.peers, a.peersSeen = peers, true
	a.mu.Unlock()
	a.Kick()
}

func (a *Agent) vtepAddr() *net.IPNet {
	return &net.IPNet{IP: overlay.VTEPAddr(a.podCIDR), Mask: net.CIDRMask(32, 32)}
}

// reconcile brings the node to its wanted state. Each step runs even when an
// earlier one failed, so one broken piece does not freeze the others.
func (a *Agent) reconcile(ctx context.Context) {
	start := time.Now()
	var errs []error
	writes := 0

	vx, err := vxlan.Ensure(vxlan.Config{
		Name: vxlan.DefaultName, VNI: a.cfg.VNI, Port: a.cfg.Port, LocalIP: a.underlay.IP,
		Underlay: a.underlay.Link.Attrs().Index, MTU: a.cfg.MTU, MAC: a.mac, Addr: a.vtepAddr(),
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("vxlan device: %w", err))
	}

	if !a.published {
		self := datastore.Node{Name: a.cfg.NodeName, PodCIDR: a.podCIDR, VTEPMAC: a.mac, UnderlayIP: a.underlay.IP}
		if err := a.cfg.Datastore.Publish(ctx, self); err != nil {
			a.m.DatastoreErrors.Inc()
			errs = append(errs, fmt.Errorf("publish VTEP: %w", err))
		} else {
			a.published = true
		}
	}

	a.mu.Lock()
	peers, seen := a.peers, a.peersSeen
	a.mu.Unlock()
	// Until the datastore has delivered its first full view, an empty peer
	// list means "unknown", not "none": syncing it would delete every route
	// a previous agent programmed and cut established pod traffic.
	if seen && vx != nil {
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
	a.lastLoop.Store(time.Now().UnixNano())
}

// writeNodeState writes the plugin's state file, then the conflist: the
// conflist is what makes the runtime call the plugin, so it comes last.
func (a *Agent) writeNodeState(mtu int) error {
	st := nodestate.State{
		Version: nodestate.Version, PodCIDR: a.podCIDR.String(), ClusterCIDR: a.cfg.ClusterCIDR.String(),
		MTU: mtu, Gateway: nodestate.FirstAddress(a.podCIDR).String(),
	}
	if cur, err := nodestate.Read(a.cfg.StateFile); err != nil || cur.PodCIDR.String() != st.PodCIDR ||
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
	s, err := ipam.Open(filepath.Join(dir, cniconf.NetworkName))
	if err != nil {
		return
	}
	defer s.Close()
	if free, err := s.Free(pool); err == nil {
		a.m.IPAMAllocated.Set(float64(pool.Size() - free))
	}
}
