package cni_test

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
)

// client is a real CNI client driving a node's conflist: the verbs a
// container runtime issues.
type client interface {
	name() string
	// containerID is the ID the client gives the pod's attachment.
	containerID(p *pod) string
	add(t *testing.T, n *node, p *pod) (*current.Result, error)
	check(t *testing.T, n *node, p *pod) error
	del(t *testing.T, n *node, p *pod) error
	// gc sends GC; valid is nil for "no attachment is valid".
	gc(t *testing.T, n *node, valid []types.GCAttachment) error
	status(t *testing.T, n *node) error
}

// libcniClient is libcni in-process, as containerd and CRI-O use it; each
// call runs on a thread inside the node namespace, so the exec'd plugins run
// on the node.
type libcniClient struct{}

func (libcniClient) name() string              { return "libcni" }
func (libcniClient) containerID(p *pod) string { return p.id }

func (libcniClient) add(t *testing.T, n *node, p *pod) (*current.Result, error) {
	t.Helper()
	var res *current.Result
	err := n.do(t, func() error {
		ctx, cancel := callCtx()
		defer cancel()
		r, err := n.cni.AddNetworkList(ctx, n.list, p.runtimeConf())
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	return res, err
}

func (libcniClient) check(t *testing.T, n *node, p *pod) error {
	t.Helper()
	return n.do(t, func() error {
		ctx, cancel := callCtx()
		defer cancel()
		return n.cni.CheckNetworkList(ctx, n.list, p.runtimeConf())
	})
}

func (libcniClient) del(t *testing.T, n *node, p *pod) error {
	t.Helper()
	return n.do(t, func() error {
		ctx, cancel := callCtx()
		defer cancel()
		return n.cni.DelNetworkList(ctx, n.list, p.runtimeConf())
	})
}

func (libcniClient) gc(t *testing.T, n *node, valid []types.GCAttachment) error {
	t.Helper()
	return n.do(t, func() error {
		ctx, cancel := callCtx()
		defer cancel()
		return n.cni.GCNetworkList(ctx, n.list, &libcni.GCArgs{ValidAttachments: valid})
	})
}

func (libcniClient) status(t *testing.T, n *node) error {
	t.Helper()
	return n.do(t, func() error {
		ctx, cancel := callCtx()
		defer cancel()
		return n.cni.GetStatusNetworkList(ctx, n.list)
	})
}

// cnitoolClient is the cnitool binary, run on the node with `ip netns exec`
// and given the conflist through NETCONFPATH. cnitool keeps its result cache
// in /var/lib/cni; each test's unique network name keeps its entries apart,
// and they are removed when the test ends.
type cnitoolClient struct{}

func (cnitoolClient) name() string { return "cnitool" }

// containerID mirrors cnitool: it derives the ID from the netns path.
func (cnitoolClient) containerID(p *pod) string {
	s := sha512.Sum512([]byte(p.ns.Path()))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

func (c cnitoolClient) run(t *testing.T, n *node, p *pod, verb string) ([]byte, error) {
	t.Helper()
	t.Cleanup(func() { removeCnitoolCache(n.netName) })
	netnsPath := "/nonexistent" // gc and status ignore it, but cnitool wants one
	if p != nil {
		netnsPath = p.ns.Path()
	}
	cmd := exec.Command("ip", "netns", "exec", n.nsName(),
		filepath.Join(refDir, "cnitool"), verb, n.netName, netnsPath)
	cmd.Env = append(os.Environ(), "NETCONFPATH="+n.confDir, "CNI_PATH="+cniPath)
	if p != nil {
		cmd.Env = append(cmd.Env, "CNI_IFNAME="+p.ifName)
		if p.caps != nil {
			caps, err := json.Marshal(p.caps)
			if err != nil {
				t.Fatal(err)
			}
			cmd.Env = append(cmd.Env, "CAP_ARGS="+string(caps))
		}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("cnitool %s: %w: %s", verb, err, bytes.TrimSpace(errb.Bytes()))
	}
	return out.Bytes(), nil
}

func (c cnitoolClient) add(t *testing.T, n *node, p *pod) (*current.Result, error) {
	t.Helper()
	out, err := c.run(t, n, p, "add")
	if err != nil {
		return nil, err
	}
	r, err := create.Create(n.list.CNIVersion, out)
	if err != nil {
		return nil, fmt.Errorf("decode cnitool add output %q: %w", out, err)
	}
	return current.NewResultFromResult(r)
}

func (c cnitoolClient) check(t *testing.T, n *node, p *pod) error {
	t.Helper()
	_, err := c.run(t, n, p, "check")
	return err
}

func (c cnitoolClient) del(t *testing.T, n *node, p *pod) error {
	t.Helper()
	_, err := c.run(t, n, p, "del")
	return err
}

// gc cannot name valid attachments: cnitool sends GC with none, so every
// attachment of the network is collected.
func (c cnitoolClient) gc(t *testing.T, n *node, valid []types.GCAttachment) error {
	t.Helper()
	if len(valid) > 0 {
		t.Fatal("cnitool gc cannot pass valid attachments")
	}
	_, err := c.run(t, n, nil, "gc")
	return err
}

func (c cnitoolClient) status(t *testing.T, n *node) error {
	t.Helper()
	_, err := c.run(t, n, nil, "status")
	return err
}

// removeCnitoolCache deletes the machine-wide libcni cache entries of one
// test network, which cnitool writes under libcni.CacheDir (/var/lib/cni).
func removeCnitoolCache(netName string) {
	matches, _ := filepath.Glob(filepath.Join(libcni.CacheDir, "results", netName+"-*"))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}
