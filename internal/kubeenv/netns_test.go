package kubeenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drover-net/drover/internal/testns"
)

// Addresses of the test network between the two namespaces: TEST-NET-1, so
// they can never be mistaken for a real network.
const (
	serverAddr = "192.0.2.1"
	nodeAddr   = "192.0.2.2"
)

// TestCallerNamespace runs the environment the way a multi-node test will:
// the API server in a namespace the test built, bound to its address on a
// veth link, and a node process in a second namespace reaching it over that
// link. It then checks that nothing of the environment outlives its test.
func TestCallerNamespace(t *testing.T) {
	server := testns.New(t)
	node := testns.New(t)
	linkNamespaces(t, server, node)

	var e *Env
	t.Run("a node in another namespace reaches the API server on the test network", func(t *testing.T) {
		e = Start(t, Options{NetNS: server.Path(), Address: serverAddr})
		if want := "https://" + serverAddr + ":"; !strings.HasPrefix(e.URL, want) {
			t.Errorf("URL %s, want %s...", e.URL, want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := e.Client.CoreV1().Nodes().Create(ctx, newNode("node-remote"), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node from the root namespace: %v", err)
		}
		out, err := runHelperIn(t, node.Path(), e.Kubeconfig)
		if err != nil || out != "nodes: node-remote" {
			t.Fatalf("helper in the node namespace: %v\n%s", err, out)
		}
	})
	if e == nil {
		t.Fatal("the environment did not start")
	}

	t.Run("no process or directory outlives the test", func(t *testing.T) {
		for _, pid := range e.PIDs() {
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			// A recycled PID is some other program; ours would still
			// carry its binary's name.
			if bytes.Contains(cmdline, []byte("etcd")) || bytes.Contains(cmdline, []byte("kube-apiserver")) {
				t.Errorf("pid %d still runs: %q", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
			}
		}
		if _, err := os.Stat(e.Dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists (stat: %v)", e.Dir, err)
		}
		// Nothing listens any more where the server was.
		d := NetNSDialer(server.Path())
		if c, err := d(context.Background(), "tcp", e.Host()); err == nil {
			_ = c.Close()
			t.Errorf("something still listens on %s in the server namespace", e.Host())
		}
	})
}

// linkNamespaces joins a and b with a veth pair carrying serverAddr and
// nodeAddr. The pair is created from inside a, straight into both
// namespaces, so it never exists in the root namespace, even briefly.
func linkNamespaces(t *testing.T, a, b ns.NetNS) {
	t.Helper()
	err := a.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: "kubeenv0"},
			PeerName:      "kubeenv1",
			PeerNamespace: netlink.NsFd(int(b.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		return addrUp("kubeenv0", serverAddr)
	})
	if err != nil {
		t.Fatalf("link %s to %s: %v", a.Path(), b.Path(), err)
	}
	if err := b.Do(func(ns.NetNS) error { return addrUp("kubeenv1", nodeAddr) }); err != nil {
		t.Fatalf("configure %s: %v", b.Path(), err)
	}
}

func addrUp(name, ip string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(24, 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", ip, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
