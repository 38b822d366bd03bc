//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drover-net/drover/internal/testcluster"
)

// TestThreeNodeCluster: three nodes each turn Ready only once their droverd
// wrote the conflist; pods on every node get addresses from their node's
// pod CIDR and reach every other pod over TCP across nodes; then the
// scenarios that need a running cluster run on it in order.
func TestThreeNodeCluster(t *testing.T) {
	c := newCluster(t)
	for range 3 {
		c.addNode(t)
	}
	for _, n := range c.nodes {
		c.waitNotReadyForCNI(t, n)
	}
	for _, n := range c.nodes {
		n.startDroverd(t)
		c.waitNodeReady(t, n, 60*time.Second)
		if _, err := os.Stat(n.conflist()); err != nil {
			t.Fatalf("node %s Ready but no conflist: %v", n.Name, err)
		}
	}

	// Two pods per node.
	pods := map[string]*corev1.Pod{} // name -> pod
	var names []string
	for _, n := range c.nodes {
		for j := range 2 {
			name := fmt.Sprintf("%s-pod-%d", n.Name, j)
			c.pod(t, name, n)
			names = append(names, name)
		}
	}
	for i, name := range names {
		p := c.waitRunning(t, name, 90*time.Second)
		pods[name] = p
		n := c.nodes[i/2]
		_, cidr, _ := net.ParseCIDR(n.podCIDR)
		if !cidr.Contains(net.ParseIP(p.Status.PodIP)) {
			t.Fatalf("pod %s IP %s outside node %s pod CIDR %s", name, p.Status.PodIP, n.Name, n.podCIDR)
		}
	}
	nodeOf := func(p *corev1.Pod) *node {
		for _, n := range c.nodes {
			if n.Name == p.Spec.NodeName {
				return n
			}
		}
		t.Fatalf("pod %s on unknown node %s", p.Name, p.Spec.NodeName)
		return nil
	}

	t.Run("every pod reaches every other pod over TCP", func(t *testing.T) {
		for _, from := range names {
			for _, to := range names {
				if from == to {
					continue
				}
				src, dst := pods[from], pods[to]
				msg := from + "->" + to
				eventually(t, 20*time.Second, func() error {
					out, err := get(nodeOf(src), src.Status.PodIP, "/dial", url.Values{"addr": {net.JoinHostPort(dst.Status.PodIP, "7000")}, "msg": {msg}})
					if err != nil {
						return fmt.Errorf("%s: %w", msg, err)
					}
					if out != msg {
						return fmt.Errorf("%s: echo %q", msg, out)
					}
					return nil
				})
			}
		}
	})

	t.Run("restarting droverd loses no connection across its node", func(t *testing.T) {
		src, dst := pods["node-1-pod-0"], pods["node-2-pod-0"]
		var wg sync.WaitGroup
		var out string
		var err error
		wg.Go(func() {
			out, err = get(nodeOf(src), src.Status.PodIP, "/hold", url.Values{
				"addr": {net.JoinHostPort(dst.Status.PodIP, "7000")}, "n": {"60"}, "every": {"100ms"}})
		})
		time.Sleep(time.Second)
		for _, n := range c.nodes[:2] {
			n.droverd.stop(10 * time.Second)
			n.startDroverd(t)
		}
		wg.Wait()
		if err != nil || out != "ok" {
			t.Fatalf("connection %s -> %s across droverd restarts: %q %v", src.Name, dst.Name, out, err)
		}
		for _, n := range c.nodes[:2] {
			c.waitNodeReady(t, n, 30*time.Second)
		}
	})

	t.Run("pod deletion leaves no address or veth on the node", func(t *testing.T) {
		p := pods["node-3-pod-1"]
		n := nodeOf(p)
		if !ipamHolds(t, n, p.Status.PodIP) {
			t.Fatalf("IPAM store of %s has no record for running pod %s (%s)", n.Name, p.Name, p.Status.PodIP)
		}
		before := veths(t, n)
		c.deletePod(t, p.Name, 60*time.Second)
		delete(pods, p.Name)
		eventually(t, 30*time.Second, func() error {
			if ipamHolds(t, n, p.Status.PodIP) {
				return fmt.Errorf("address %s of deleted pod still allocated on %s", p.Status.PodIP, n.Name)
			}
			if after := veths(t, n); after != before-1 {
				return fmt.Errorf("%s has %d pod veths after deleting a pod, had %d", n.Name, after, before)
			}
			return nil
		})
	})

	t.Run("a removed node's routes vanish from its peers and pods elsewhere keep working", func(t *testing.T) {
		gone := c.nodes[2]
		for _, n := range c.nodes[:2] {
			if out, _ := testcluster.Exec(n.NS, "ip", "-4", "route", "show", gone.podCIDR); strings.TrimSpace(out) == "" {
				t.Fatalf("%s has no route to %s before the node goes", n.Name, gone.podCIDR)
			}
		}
		gone.kubelet.stop(10 * time.Second)
		gone.droverd.stop(10 * time.Second)
		// A stopped agent (its DaemonSet pod gone) leaves the node able to
		// serve: plugin, driver and conflist stay until uninstall is asked.
		for _, f := range []string{gone.conflist(), filepath.Join(gone.cniBin(), "drover"), filepath.Join(gone.pluginDir(), "drover~local", "local")} {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("%s gone after droverd stopped on %s: %v", f, gone.Name, err)
			}
		}
		if err := c.env.Client.CoreV1().Nodes().Delete(context.Background(), gone.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, n := range c.nodes[:2] {
			eventually(t, 20*time.Second, func() error {
				out, err := testcluster.Exec(n.NS, "ip", "-4", "route", "show", gone.podCIDR)
				if err != nil {
					return fmt.Errorf("ip route on %s: %v %s", n.Name, err, out)
				}
				if strings.TrimSpace(out) != "" {
					return fmt.Errorf("%s still routes %s: %s", n.Name, gone.podCIDR, out)
				}
				return nil
			})
		}
		src, dst := pods["node-1-pod-1"], pods["node-2-pod-1"]
		msg := "after-removal"
		out, err := get(nodeOf(src), src.Status.PodIP, "/dial", url.Values{"addr": {net.JoinHostPort(dst.Status.PodIP, "7000")}, "msg": {msg}})
		if err != nil || out != msg {
			t.Fatalf("%s -> %s after node removal: %q %v", src.Name, dst.Name, out, err)
		}
	})
}

// ipamHolds reports whether the node's IPAM store has a record for ip.
func ipamHolds(t *testing.T, n *node, ip string) bool {
	t.Helper()
	found := false
	_ = filepath.WalkDir(n.path("run", "ipam"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == ip {
			found = true
		}
		return nil
	})
	return found
}

// veths counts the pod veths on the node's drover0 bridge.
func veths(t *testing.T, n *node) int {
	t.Helper()
	out, err := testcluster.Exec(n.NS, "ip", "-o", "link", "show", "master", "drover0", "type", "veth")
	if err != nil {
		t.Fatalf("list veths on %s: %v %s", n.Name, err, out)
	}
	count := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) != "" {
			count++
		}
	}
	return count
}
