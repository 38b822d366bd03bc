package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/testns"
)

// pluginBin is the drover binary built once for the package's tests.
var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "drover-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "drover")
	build := exec.Command("go", "build", "-o", pluginBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build drover:", err)
		os.Exit(1)
	}
	before := rootLinks()
	code := m.Run()
	// The tests run the plugin only inside namespaces they made; a bridge
	// or veth of ours in the machine's own namespace is a test bug.
	if after := rootLinks(); after > before {
		fmt.Fprintf(os.Stderr, "FAIL: tests left %d drover links in the root network namespace\n", after-before)
		code = 1
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func rootLinks() int {
	links, _ := netlink.LinkList()
	n := 0
	for _, l := range links {
		if name := l.Attrs().Name; name == "drover0" || strings.HasPrefix(name, "drv") {
			n++
		}
	}
	return n
}

// node is a network namespace standing for a Kubernetes node, with its own
// IPAM store.
type node struct {
	ns      ns.NetNS
	dataDir string
	state   string // node state file path
	cidr    string
}

var cidrSeq atomic.Int32

func newNode(t *testing.T) *node {
	t.Helper()
	return &node{
		ns:      testns.New(t),
		dataDir: t.TempDir(),
		state:   filepath.Join(t.TempDir(), "node.json"),
		cidr:    fmt.Sprintf("10.%d.%d.0/24", 100+cidrSeq.Add(1)/250, cidrSeq.Load()%250),
	}
}

// conf renders a network config; extra keys override the defaults and a nil
// value deletes a key.
func (n *node) conf(version string, extra map[string]any) []byte {
	c := map[string]any{
		"cniVersion": version,
		"name":       "test-net",
		"type":       "drover",
		"podCIDR":    n.cidr,
		"dataDir":    n.dataDir,
		"nodeState":  n.state,
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, _ := json.Marshal(c)
	return b
}

// call is one plugin invocation.
type call struct {
	cmd, id, netns, ifname string
	stdin                  []byte
	env                    map[string]string // overrides; "" deletes
	// stdout, when set, gets the plugin's stdout instead of the outcome,
	// and a failure is not decoded: for a stdout the plugin cannot write.
	stdout io.Writer
}

// outcome is what the plugin did.
type outcome struct {
	stdout, stderr []byte
	exitCode       int
	cniErr         *types.Error // decoded from stdout when exit != 0
}

// run execs the plugin inside the node's namespace, as a runtime on that
// node would.
func (n *node) run(t *testing.T, c call) outcome {
	t.Helper()
	env := map[string]string{
		"CNI_COMMAND":     c.cmd,
		"CNI_CONTAINERID": c.id,
		"CNI_NETNS":       c.netns,
		"CNI_IFNAME":      c.ifname,
		"CNI_PATH":        filepath.Dir(pluginBin),
		"PATH":            os.Getenv("PATH"),
	}
	for k, v := range c.env {
		env[k] = v
	}
	var o outcome
	err := n.ns.Do(func(ns.NetNS) error {
		cmd := exec.Command(pluginBin)
		for k, v := range env {
			if v != "" {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
		}
		var out, errb bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(c.stdin), &out, &errb
		if c.stdout != nil {
			cmd.Stdout = c.stdout
		}
		err := cmd.Run()
		o.stdout, o.stderr = out.Bytes(), errb.Bytes()
		if ee, ok := err.(*exec.ExitError); ok {
			o.exitCode = ee.ExitCode()
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("exec plugin %s: %v", c.cmd, err)
	}
	if o.exitCode != 0 && c.stdout == nil {
		o.cniErr = &types.Error{}
		if err := json.Unmarshal(o.stdout, o.cniErr); err != nil {
			t.Fatalf("%s exited %d with stdout that is not a CNI error object: %q (stderr %q)", c.cmd, o.exitCode, o.stdout, o.stderr)
		}
	}
	return o
}

// mustSucceed fails the test unless the call exited 0.
func (o outcome) mustSucceed(t *testing.T, what string) outcome {
	t.Helper()
	if o.exitCode != 0 {
		t.Fatalf("%s failed: code %d %s: %s", what, o.cniErr.Code, o.cniErr.Msg, o.cniErr.Details)
	}
	return o
}

// allocations lists the address records of the node's store.
func (n *node) allocations(t *testing.T) map[string]string {
	t.Helper()
	recs := map[string]string{}
	dir := filepath.Join(n.dataDir, "test-net")
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return recs
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Count(e.Name(), ".") != 3 || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		recs[e.Name()] = string(data)
	}
	return recs
}

// links lists link names in a namespace.
func links(t *testing.T, n ns.NetNS) []string {
	t.Helper()
	var names []string
	err := n.Do(func(ns.NetNS) error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// hostVeths counts drover's host veths on the node.
func (n *node) hostVeths(t *testing.T) int {
	t.Helper()
	c := 0
	for _, name := range links(t, n.ns) {
		if strings.HasPrefix(name, "drv") {
			c++
		}
	}
	return c
}
