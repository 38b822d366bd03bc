package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"os"

	"github.com/drover-net/drover/pkg/nodestate"
	"github.com/drover-net/drover/pkg/overlay"
)

// peerCache is the agent's private record of what it last learned from the
// datastore, kept beside the node state (tmpfs: a reboot forgets it, as it
// forgets the routes it describes). After a restart with the datastore
// unreachable it lets the agent keep repairing routes, neighbours and FDB
// entries of the peers it knew instead of leaving them unguarded; the
// datastore's first view replaces it.
type peerCache struct {
	Version    int          `json:"version"`
	Node       string       `json:"node"`
	UnderlayIP net.IP       `json:"underlayIP,omitempty"`
	Peers      []cachedPeer `json:"peers"`
}

type cachedPeer struct {
	Name       string `json:"name"`
	PodCIDR    string `json:"podCIDR"`
	VTEPMAC    string `json:"vtepMAC"`
	UnderlayIP string `json:"underlayIP"`
}

const peerCacheVersion = 1

// loadPeerCache reads the cache and, when it is this node's, installs its
// peers as the ones to program until the first view. A missing, foreign or
// unreadable cache is no cache.
func (a *Agent) loadPeerCache() *peerCache {
	if a.cfg.PeerCache == "" {
		return nil
	}
	data, err := os.ReadFile(a.cfg.PeerCache)
	if err != nil {
		return nil
	}
	var c peerCache
	if err := json.Unmarshal(data, &c); err != nil || c.Version != peerCacheVersion || c.Node != a.cfg.NodeName {
		a.log.Warn("ignoring the peer cache", "path", a.cfg.PeerCache, "err", err)
		return nil
	}
	var peers []overlay.Peer
	for _, p := range c.Peers {
		cidr, err := nodestate.ParseIPv4CIDR(p.PodCIDR)
		mac, err2 := net.ParseMAC(p.VTEPMAC)
		ip := net.ParseIP(p.UnderlayIP).To4()
		if err != nil || err2 != nil || ip == nil {
			continue
		}
		peers = append(peers, overlay.Peer{Name: p.Name, PodCIDR: cidr, VTEPMAC: mac, UnderlayIP: ip})
	}
	a.mu.Lock()
	a.cached, a.hasCache = peers, true
	a.mu.Unlock()
	return &c
}

// savePeerCache records peers (as the datastore gave them, before
// validation, which runs again on load) and the underlay address.
func (a *Agent) savePeerCache(peers []overlay.Peer) error {
	if a.cfg.PeerCache == "" {
		return nil
	}
	c := peerCache{Version: peerCacheVersion, Node: a.cfg.NodeName, UnderlayIP: a.underlay.IP, Peers: []cachedPeer{}}
	for _, p := range peers {
		c.Peers = append(c.Peers, cachedPeer{Name: p.Name, PodCIDR: p.PodCIDR.String(), VTEPMAC: p.VTEPMAC.String(), UnderlayIP: p.UnderlayIP.String()})
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode peer cache: %w", err)
	}
	if err := nodestate.WriteFileAtomic(a.cfg.PeerCache, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write peer cache: %w", err)
	}
	return nil
}
