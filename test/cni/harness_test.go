package cni_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/drover-net/drover/internal/cnirig"
	"github.com/drover-net/drover/internal/testns"
)

// callTimeout bounds one libcni or cnitool call: far above any sane ADD, so
// only a hung plugin trips it.
const callTimeout = 60 * time.Second

// node is a test-made network namespace standing for a Kubernetes node, with
// its own IPAM store, libcni cache and conflist directory, all temporary.
type node struct {
	ns        ns.NetNS
	netName   string // unique: cnitool's result cache is machine-wide
	podCIDR   *net.IPNet
	gateway   net.IP
	dataDir   string
	stateFile string
	cacheDir  string
	confDir   string
	cni       *libcni.CNIConfig
	list      *libcni.NetworkConfigList
}

// newNode makes a node serving podCIDR with a conflist of drover alone in
// CNI 1.1.0; chain replaces the conflist.
func newNode(t *testing.T, podCIDR string) *node {
	t.Helper()
	testns.RequireRoot(t)
	return newNodeIn(t, newNS(t), podCIDR)
}

// newNodeIn is newNode on an existing node namespace: another network of the
// same node.
func newNodeIn(t *testing.T, nodeNS ns.NetNS, podCIDR string) *node {
	t.Helper()
	_, cidr, err := net.ParseCIDR(podCIDR)
	if err != nil {
		t.Fatalf("pod CIDR %q: %v", podCIDR, err)
	}
	gw := make(net.IP, 4)
	copy(gw, cidr.IP.To4())
	gw[3]++
	tmp := t.TempDir()
	n := &node{
		ns:        nodeNS,
		netName:   "drover-test-" + randHex(t, 6),
		podCIDR:   cidr,
		gateway:   gw,
		dataDir:   filepath.Join(tmp, "ipam"),
		stateFile: filepath.Join(tmp, "node.json"),
		cacheDir:  filepath.Join(tmp, "cache"),
		confDir:   filepath.Join(tmp, "net.d"),
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{cniPath}, n.cacheDir, newExec())
	n.chain(t, "1.1.0")
	return n
}

// chain sets the node's conflist: drover first, then the given plugins.
func (n *node) chain(t *testing.T, cniVersion string, after ...cnirig.Plugin) {
	t.Helper()
	n.chainOf(t, cniVersion, cnirig.Drover(n.podCIDR.String(), n.dataDir, n.stateFile), after...)
}

// chainOf sets the node's conflist from drover's entry and the plugins
// after it.
func (n *node) chainOf(t *testing.T, cniVersion string, drover cnirig.Plugin, after ...cnirig.Plugin) {
	t.Helper()
	plugins := append([]cnirig.Plugin{drover}, after...)
	raw, list, err := cnirig.List(n.netName, cniVersion, plugins...)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(n.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.confDir, "10-drover.conflist"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	n.list = list
}

// nsName is the node namespace's name under /run/netns, for `ip netns exec`.
func (n *node) nsName() string { return filepath.Base(n.ns.Path()) }

// storeDir is the IPAM store directory of the node's network.
func (n *node) storeDir() string { return filepath.Join(n.dataDir, n.netName) }

// do runs fn with the calling OS thread in the node namespace: a plugin
// exec'd from inside runs on the node, as the runtime would run it.
func (n *node) do(t testing.TB, fn func() error) error {
	t.Helper()
	return n.ns.Do(func(ns.NetNS) error { return fn() })
}

// pod is one container attachment: its own namespace and identity.
type pod struct {
	ns     ns.NetNS
	id     string
	ifName string
	caps   map[string]any // capability args (portMappings, bandwidth, ips, mac)
}

func newPod(t *testing.T, id string) *pod {
	t.Helper()
	return &pod{ns: newNS(t), id: id, ifName: "eth0"}
}

func (p *pod) runtimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    p.id,
		NetNS:          p.ns.Path(),
		IfName:         p.ifName,
		CapabilityArgs: p.caps,
	}
}

// newExec is libcni's default plugin executor, made up front: libcni fills
// a nil one lazily without a lock, which races when one CNIConfig serves
// parallel calls.
func newExec() invoke.Exec {
	return &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: os.Stderr},
		PluginDecoder: version.PluginDecoder{},
	}
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}
