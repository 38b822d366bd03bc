//go:build e2e

package e2e_test

import (
	"net"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestNodeJoinsAndRunsPods: a node registers and stays NotReady ("cni
// plugin not initialized") until its droverd writes the conflist, then
// turns Ready, and a pod created through the API gets its address from the
// drover plugin, inside the node's pod CIDR.
func TestNodeJoinsAndRunsPods(t *testing.T) {
	c := newCluster(t)
	n := c.addNode(t)

	c.waitNotReadyForCNI(t, n)
	if _, err := os.Stat(n.conflist()); err == nil {
		t.Fatalf("conflist %s exists before droverd ran", n.conflist())
	}
	// Stays NotReady while nothing writes the conflist.
	time.Sleep(3 * time.Second)
	if st, msg, _ := c.nodeReady(n.Name); st == corev1.ConditionTrue {
		t.Fatalf("node Ready without a CNI config: %s", msg)
	}

	n.startDroverd(t)
	c.waitNodeReady(t, n, 60*time.Second)
	if _, err := os.Stat(n.conflist()); err != nil {
		t.Fatalf("node Ready but no conflist: %v", err)
	}

	c.pod(t, "first", n)
	p := c.waitRunning(t, "first", 90*time.Second)
	_, cidr, _ := net.ParseCIDR(n.podCIDR)
	if ip := net.ParseIP(p.Status.PodIP); !cidr.Contains(ip) {
		t.Fatalf("pod IP %s outside node %s pod CIDR %s", ip, n.Name, n.podCIDR)
	}
	if out, err := get(n, p.Status.PodIP, "/healthz", nil); err != nil || out != "ok" {
		t.Fatalf("pod %s /healthz: %q %v", p.Status.PodIP, out, err)
	}
}
