// Package nodestate holds the small, versioned file through which the node
// agent (droverd) tells the CNI plugin what it needs to serve pods: the node's
// pod CIDR, the cluster CIDR, the MTU and the gateway. It is the one home of
// that contract; it does not know how the values were found. The agent also
// records which node wrote the file, so that after a restart with the API
// server unreachable it can tell its own previous state from a stale one.
//
// The file is JSON, written atomically (temporary file in the same directory,
// fsync, rename), so a reader sees the old state or the new one, never half:
//
//	{"version":1,"node":"node-1","podCIDR":"10.244.1.0/24",
//	 "clusterCIDR":"10.244.0.0/16","mtu":1450,"gateway":"10.244.1.1"}
package nodestate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
)

// Version is the file format version this package writes and reads.
const Version = 1

// DefaultPath is where droverd writes the state and the plugin reads it.
const DefaultPath = "/run/drover/node.json"

// PeerCacheName is droverd's record of its last peers, which it keeps beside
// the state file by default; uninstall removes it from there.
const PeerCacheName = "peers.json"

// ErrNotFound says the file does not exist yet: the agent has not written
// it, so the node cannot serve pods until it does.
var ErrNotFound = errors.New("node state not found")

// State is what the plugin needs to know about its node.
type State struct {
	Version int `json:"version"`
	// Node names the node the agent wrote the file for; optional, and
	// ignored by the plugin (older readers skip unknown fields).
	Node        string `json:"node,omitempty"`
	PodCIDR     string `json:"podCIDR"`
	ClusterCIDR string `json:"clusterCIDR,omitempty"`
	MTU         int    `json:"mtu,omitempty"`
	Gateway     string `json:"gateway,omitempty"`
}

// Parsed is a validated State in Go types.
type Parsed struct {
	Node        string // "" when not recorded
	PodCIDR     *net.IPNet
	ClusterCIDR *net.IPNet // nil when not known
	MTU         int        // 0 when not known
	Gateway     net.IP
}

// Read loads and validates the state at path. A missing file is ErrNotFound.
func Read(path string) (*Parsed, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read node state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("decode node state %s: %w", path, err)
	}
	if s.Version != Version {
		return nil, fmt.Errorf("node state %s has version %d, this plugin reads version %d", path, s.Version, Version)
	}
	p, err := s.Parse()
	if err != nil {
		return nil, fmt.Errorf("node state %s: %w", path, err)
	}
	return p, nil
}

// Parse validates s. The gateway defaults to the first address of the pod
// CIDR.
func (s State) Parse() (*Parsed, error) {
	var p Parsed
	var err error
	if s.PodCIDR == "" {
		return nil, errors.New("podCIDR is empty")
	}
	if p.PodCIDR, err = ParseIPv4CIDR(s.PodCIDR); err != nil {
		return nil, fmt.Errorf("podCIDR: %w", err)
	}
	if ones, _ := p.PodCIDR.Mask.Size(); ones > 30 {
		return nil, fmt.Errorf("podCIDR %s is too small: it needs room for a gateway and at least one pod (/30 or larger)", s.PodCIDR)
	}
	if s.ClusterCIDR != "" {
		if p.ClusterCIDR, err = ParseIPv4CIDR(s.ClusterCIDR); err != nil {
			return nil, fmt.Errorf("clusterCIDR: %w", err)
		}
		if !contains(p.ClusterCIDR, p.PodCIDR) {
			return nil, fmt.Errorf("podCIDR %s is not inside clusterCIDR %s", p.PodCIDR, p.ClusterCIDR)
		}
	}
	if s.MTU != 0 && (s.MTU < 576 || s.MTU > 9000) {
		return nil, fmt.Errorf("mtu %d is outside 576..9000", s.MTU)
	}
	p.MTU = s.MTU
	p.Node = s.Node
	if s.Gateway == "" {
		p.Gateway = FirstAddress(p.PodCIDR)
	} else {
		p.Gateway = net.ParseIP(s.Gateway).To4()
		if p.Gateway == nil {
			return nil, fmt.Errorf("gateway %q is not an IPv4 address", s.Gateway)
		}
		if !p.PodCIDR.Contains(p.Gateway) || p.Gateway.Equal(p.PodCIDR.IP) || p.Gateway.Equal(lastAddress(p.PodCIDR)) {
			return nil, fmt.Errorf("gateway %s is not a host address of podCIDR %s", p.Gateway, p.PodCIDR)
		}
	}
	return &p, nil
}

// Write stores s at path atomically, creating the directory if needed.
func Write(path string, s State) error {
	s.Version = Version
	if _, err := s.Parse(); err != nil {
		return fmt.Errorf("refuse to write invalid node state: %w", err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode node state: %w", err)
	}
	return WriteFileAtomic(path, append(data, '\n'), 0o644)
}

// WriteFileAtomic writes data to a dot-file beside path, syncs it and renames
// it over path, so readers never see a partial file.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	ok = true
	return nil
}

// ParseIPv4CIDR parses an IPv4 CIDR that names a network (no host bits set).
func ParseIPv4CIDR(s string) (*net.IPNet, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a CIDR", s)
	}
	if ip.To4() == nil {
		return nil, fmt.Errorf("%q is not an IPv4 CIDR (IPv6 is not supported yet)", s)
	}
	if !ip.Equal(n.IP) {
		return nil, fmt.Errorf("%q has host bits set; the network is %s", s, n)
	}
	n.IP = n.IP.To4()
	return n, nil
}

// FirstAddress is the first host address of n (network address + 1).
func FirstAddress(n *net.IPNet) net.IP {
	ip := make(net.IP, 4)
	copy(ip, n.IP.To4())
	ip[3]++
	return ip
}

func lastAddress(n *net.IPNet) net.IP {
	ip := make(net.IP, 4)
	base := n.IP.To4()
	for i := range ip {
		ip[i] = base[i] | ^n.Mask[i]
	}
	return ip
}

func contains(outer, inner *net.IPNet) bool {
	oo, _ := outer.Mask.Size()
	io, _ := inner.Mask.Size()
	return oo <= io && outer.Contains(inner.IP)
}
