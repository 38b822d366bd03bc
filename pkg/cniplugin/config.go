// Package cniplugin implements the verbs of the drover CNI plugin (ADD, DEL,
// CHECK, STATUS, GC) over skel's CmdArgs. It is the plugin's contract edge:
// CNI config, results and error codes live here; addresses come from
// pkg/ipam and links from pkg/datapath. It does not run the overlay: that is
// droverd's job, which hands this plugin the node's state through
// pkg/nodestate.
package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/drover-net/drover/pkg/nodestate"
)

const (
	// DefaultBridge is the node bridge that holds the gateway address.
	DefaultBridge = "drover0"
	// DefaultDataDir is the root of the IPAM store: tmpfs, so a reboot
	// cannot leak addresses.
	DefaultDataDir = "/run/drover/ipam"
	// DefaultMTU applies when neither the config nor the node state gives
	// one: a single node with no encapsulation.
	DefaultMTU = 1500
)

// lockTimeout bounds the wait for the IPAM store lock; past it ADD and DEL
// answer "try again later" instead of hanging the runtime. A variable only
// so that tests can reach that answer without waiting 30 s.
var lockTimeout = 30 * time.Second

// NetConf is drover's network configuration, as the runtime passes it on
// stdin.
type NetConf struct {
	types.NetConf

	// Standalone overrides of the node state file; podCIDR alone makes the
	// plugin serve without droverd.
	PodCIDR     string `json:"podCIDR,omitempty"`
	ClusterCIDR string `json:"clusterCIDR,omitempty"`
	MTU         int    `json:"mtu,omitempty"`

	Bridge    string `json:"bridge,omitempty"`
	DataDir   string `json:"dataDir,omitempty"`
	NodeState string `json:"nodeState,omitempty"`
	Hairpin   *bool  `json:"hairpin,omitempty"`

	RuntimeConfig struct {
		IPs []string `json:"ips,omitempty"`
		MAC string   `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// config is a validated NetConf.
type config struct {
	conf      *NetConf
	bridge    string
	storeDir  string // DataDir/<network name>
	stateFile string
	hairpin   bool
	ips       []net.IP // requested addresses (capability "ips")
	mac       net.HardwareAddr
}

// parseConfig decodes and validates stdin. Errors are CNI errors: 6 when the
// JSON does not decode, 7 when a value is invalid.
func parseConfig(stdin []byte) (*config, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, newError(types.ErrDecodingFailure, "decode network configuration", err)
	}
	c := &config{conf: conf, bridge: DefaultBridge, stateFile: nodestate.DefaultPath, hairpin: true}
	if err := c.validate(); err != nil {
		return nil, newError(types.ErrInvalidNetworkConfig, "invalid network configuration", err)
	}
	return c, nil
}

func (c *config) validate() error {
	n := c.conf
	if n.Name == "" {
		return errors.New("name is missing")
	}
	if e := utils.ValidateNetworkName(n.Name); e != nil {
		return fmt.Errorf("name %q: %s", n.Name, e.Msg)
	}
	if n.IPAM.Type != "" {
		return fmt.Errorf("ipam type %q given: drover allocates addresses itself, remove the ipam section", n.IPAM.Type)
	}
	if n.ClusterCIDR != "" {
		if _, err := nodestate.ParseIPv4CIDR(n.ClusterCIDR); err != nil {
			return fmt.Errorf("clusterCIDR: %w", err)
		}
	}
	if n.PodCIDR != "" {
		st := nodestate.State{Version: nodestate.Version, PodCIDR: n.PodCIDR, ClusterCIDR: n.ClusterCIDR}
		if _, err := st.Parse(); err != nil {
			return err
		}
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 9000) {
		return fmt.Errorf("mtu %d is outside 576..9000", n.MTU)
	}
	if n.Bridge != "" {
		if e := utils.ValidateInterfaceName(n.Bridge); e != nil {
			return fmt.Errorf("bridge %q: %s", n.Bridge, e.Msg)
		}
		c.bridge = n.Bridge
	}
	dataDir := DefaultDataDir
	if n.DataDir != "" {
		if !filepath.IsAbs(n.DataDir) {
			return fmt.Errorf("dataDir %q is not an absolute path", n.DataDir)
		}
		dataDir = filepath.Clean(n.DataDir)
	}
	c.storeDir = filepath.Join(dataDir, n.Name)
	if n.NodeState != "" {
		if !filepath.IsAbs(n.NodeState) {
			return fmt.Errorf("nodeState %q is not an absolute path", n.NodeState)
		}
		c.stateFile = filepath.Clean(n.NodeState)
	}
	if n.Hairpin != nil {
		c.hairpin = *n.Hairpin
	}
	for _, s := range n.RuntimeConfig.IPs {
		ip := parseIPOrCIDR(s)
		if ip == nil {
			return fmt.Errorf("runtimeConfig ips: %q is not an IPv4 address", s)
		}
		c.ips = append(c.ips, ip)
	}
	if len(c.ips) > 1 {
		return fmt.Errorf("runtimeConfig ips: %d addresses requested, drover gives one IPv4 address per attachment", len(c.ips))
	}
	if n.RuntimeConfig.MAC != "" {
		mac, err := net.ParseMAC(n.RuntimeConfig.MAC)
		if err != nil || len(mac) != 6 {
			return fmt.Errorf("runtimeConfig mac %q is not a 6-byte MAC address", n.RuntimeConfig.MAC)
		}
		if mac[0]&1 == 1 {
			return fmt.Errorf("runtimeConfig mac %q is a multicast address", n.RuntimeConfig.MAC)
		}
		c.mac = mac
	}
	return nil
}

func parseIPOrCIDR(s string) net.IP {
	if strings.Contains(s, "/") {
		ip, _, err := net.ParseCIDR(s)
		if err != nil {
			return nil
		}
		return ip.To4()
	}
	return net.ParseIP(s).To4()
}

// nodeState resolves the node's state: the config's podCIDR when given (the
// standalone mode), else the file droverd writes; config mtu and clusterCIDR
// override the file's.
func (c *config) nodeState() (*nodestate.Parsed, error) {
	var st *nodestate.Parsed
	var err error
	if c.conf.PodCIDR != "" {
		st, err = nodestate.State{Version: nodestate.Version, PodCIDR: c.conf.PodCIDR}.Parse()
	} else {
		st, err = nodestate.Read(c.stateFile)
	}
	if err != nil {
		return nil, err
	}
	if c.conf.ClusterCIDR != "" {
		st.ClusterCIDR, _ = nodestate.ParseIPv4CIDR(c.conf.ClusterCIDR)
		cOnes, _ := st.ClusterCIDR.Mask.Size()
		pOnes, _ := st.PodCIDR.Mask.Size()
		if cOnes > pOnes || !st.ClusterCIDR.Contains(st.PodCIDR.IP) {
			return nil, fmt.Errorf("podCIDR %s is not inside clusterCIDR %s", st.PodCIDR, st.ClusterCIDR)
		}
	}
	if c.conf.MTU != 0 {
		st.MTU = c.conf.MTU
	}
	if st.MTU == 0 {
		st.MTU = DefaultMTU
	}
	return st, nil
}

// stateError maps a node state failure to its CNI error: "try again later"
// while droverd has not written the file yet, "not available" when what it
// holds is unusable.
func stateError(err error) error {
	if errors.Is(err, nodestate.ErrNotFound) {
		return newError(types.ErrTryAgainLater, "node state not ready: droverd has not written it yet and the config has no podCIDR", err)
	}
	return newError(types.ErrPluginNotAvailable, "node state unusable", err)
}
