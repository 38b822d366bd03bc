// Package agent is droverd's node loop: it learns the node's pod CIDR from
// the datastore, sets up the VXLAN device, publishes its VTEP, programs every
// peer, keeps the masquerade rules, and writes the node state and CNI
// conflist once the node can serve pods. It reconciles on peer changes,
// netlink events and a periodic resync. Stopping it leaves the data path as
// it is, so a restart never interrupts pod traffic, and a restart while the
// datastore is unreachable adopts the node's previous pod CIDR and peers
// (pkg/nodestate's file and the agent's peer cache) and keeps repairing the
// data path until the datastore answers again.
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

	"github.com/drover-net/drover/pkg/datastore"
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
	// PeerCache is the agent's own record of its last peers, used after a
	// restart until the datastore delivers its first view; default
	// peers.json beside StateFile.
	PeerCache   string
	IPAMDir     string // the plugin's dataDir
	CNIConfDir  string
	CNIConfName string
	Portmap     bool
	Resync      time.Duration
	Log         *slog.Logger
	Metrics     *Metrics
}

// Agent runs the loop.
type Agent struct {
	cfg Config
	log *slog.Logger
	m   *Metrics
	mac net.HardwareAddr

	// Set before the loop starts and then owned by the loop's goroutine.
	ulIP net.IP // the underlay address to look for (flag or Node InternalIP)
	// ulHinted: ulIP comes from the datastore (no interface or address
	// configured), so it follows the own node's InternalIP in the view.
	ulHinted bool
	underlay *Underlay
	podCIDR  *net.IPNet
	masq     *masq.Rules
	pubGen   uint64    // view generation of the last publish attempt
	pubAt    time.Time // and when
	rejected string    // the last logged set of rejected peers
	cacheGen uint64    // view generation last written to the peer cache

	mu       sync.Mutex
	view     []datastore.Node // the datastore's latest full view, own node included
	viewGen  uint64           // bumped by every view
	cached   []overlay.Peer   // peers from the cache, until the first view
	hasCache bool

	trigger chan struct{}
	fatal   chan error
	ready   atomic.Bool
	waiting atomic.Bool  // still waiting for the pod CIDR
	beatAt  atomic.Int64 // unix nanos of the loop's last sign of progress

	// Watch restart backoff; tests shorten it.
	watchBackoff, watchBackoffMax time.Duration
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
	if cfg.PeerCache == "" && cfg.StateFile != "" {
		cfg.PeerCache = filepath.Join(filepath.Dir(cfg.StateFile), nodestate.PeerCacheName)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	return &Agent{
		cfg: cfg, log: cfg.Log, m: cfg.Metrics, mac: vxlan.MACForNode(cfg.NodeName),
		trigger: make(chan struct{}, 1), fatal: make(chan error, 1),
		watchBackoff: time.Second, watchBackoffMax: 30 * time.Second,
	}, nil
}

// Ready reports whether the node state and conflist are written.
func (a *Agent) Ready() bool { return a.ready.Load() }

// Healthy reports whether the loop showed progress recently: a reconcile,
// or an attempt to learn the pod CIDR while it waits for one. Waiting is
// healthy (a restart would not make the controller manager or the API
// server any faster); a loop stuck somewhere is not. Every datastore call
// has its own deadline, so a live loop beats at least every Resync or
// backoff step (10s) plus one call.
func (a *Agent) Healthy() bool {
	last := a.beatAt.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < 3*a.cfg.Resync+30*time.Second
}

func (a *Agent) beat() { a.beatAt.Store(time.Now().UnixNano()) }

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
	a.beat()
	a.waiting.Store(true)
	cache := a.loadPeerCache()
	a.ulIP = a.cfg.UnderlayIP
	if a.ulIP == nil && a.cfg.UnderlayIface == "" {
		a.ulIP = a.underlayHint(ctx, cache)
		_, a.ulHinted = a.cfg.Datastore.(datastore.UnderlayHinter)
	}
	var err error
	if a.underlay, err = FindUnderlay(a.cfg.UnderlayIface, a.ulIP); err != nil {
		return err
	}
	a.log.Info("underlay", "iface", a.underlay.Link.Attrs().Name, "ip", a.underlay.IP.String(), "vtep_mac", a.mac.String())

	// The watch starts before the pod CIDR is known, so the view is there
	// (or on its way) when the first reconcile runs.
	go a.watchDatastore(ctx)

	podCIDR, adopted, err := a.waitPodCIDR(ctx)
	if err != nil {
		return err
	}
	if !a.cfg.ClusterCIDR.Contains(podCIDR.IP) {
		return fmt.Errorf("pod CIDR %s of node %s is outside the cluster CIDR %s", podCIDR, a.cfg.NodeName, a.cfg.ClusterCIDR)
	}
	a.podCIDR = podCIDR
	a.waiting.Store(false)
	a.log.Info("pod CIDR", "cidr", a.podCIDR.String(), "adopted_from_previous_run", adopted)
	if adopted {
		go a.confirmPodCIDR(ctx)
	}
	if a.cfg.Masquerade {
		if a.masq, err = masq.New(a.cfg.ClusterCIDR); err != nil {
			return err
		}
	}

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
		case err := <-a.fatal:
			return err
		case <-tick.C:
		case <-a.trigger:
		}
		a.reconcile(ctx)
	}
}

// underlayHint is the address to find the underlay by when neither an
// interface nor an address is configured: the Node's InternalIP in
// Kubernetes, which is the address its peers know it by; with the API
// unreachable, the underlay address of the previous run.
func (a *Agent) underlayHint(ctx context.Context, cache *peerCache) net.IP {
	h, ok := a.cfg.Datastore.(datastore.UnderlayHinter)
	if !ok {
		return nil
	}
	ip, err := h.UnderlayIP(ctx, a.cfg.NodeName)
	if err == nil && ip != nil {
		return ip
	}
	if cache != nil && cache.UnderlayIP != nil {
		a.log.Warn("node InternalIP unknown; using the previous run's underlay address", "ip", cache.UnderlayIP.String(), "err", err)
		return cache.UnderlayIP
	}
	a.log.Warn("node InternalIP unknown; using the default route's interface", "err", err)
	return nil
}

// onNodes receives the datastore's full view.
func (a *Agent) onNodes(nodes []datastore.Node) {
	a.mu.Lock()
	a.view = nodes
	a.viewGen++
	a.mu.Unlock()
	a.Kick()
}

// watchDatastore runs the datastore's watch and restarts it, with capped
// exponential backoff, whenever it returns before ctx ends: without it a
// failed watch would leave the agent programming a frozen peer list until
// it is restarted by hand.
func (a *Agent) watchDatastore(ctx context.Context) {
	backoff := a.watchBackoff
	for {
		started := time.Now()
		err := a.cfg.Datastore.Watch(ctx, a.onNodes)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("watch returned without an error")
		}
		a.m.DatastoreErrors.Inc()
		a.m.WatchRestarts.Inc()
		if time.Since(started) > 2*a.watchBackoffMax {
			backoff = a.watchBackoff // it had been working: start over
		}
		a.log.Error("datastore watch ended; restarting it", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, a.watchBackoffMax)
	}
}

func (a *Agent) vtepAddr() *net.IPNet {
	return &net.IPNet{IP: overlay.VTEPAddr(a.podCIDR), Mask: net.CIDRMask(32, 32)}
}
