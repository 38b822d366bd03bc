package overlay_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/drover-net/drover/internal/kubeenv"
	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/pkg/kube"
	"github.com/drover-net/drover/pkg/overlay"
)

// kubeCluster is a netns cluster whose droverds use a real kube-apiserver
// running in a control-plane namespace on the underlay.
func kubeCluster(t *testing.T) (*cluster, *kubeenv.Env) {
	c := newCluster(t)
	cp := c.u.AddHost(t, "control-plane", net.IPv4(198, 51, 100, 2))
	c.cp = cp
	env := kubeenv.Start(t, kubeenv.Options{NetNS: cp.NS.Path(), Address: cp.IP.String()})
	c.dsArgs = []string{"--datastore", "kubernetes", "--kubeconfig", env.Kubeconfig}
	c.env = env
	return c, env
}

// createNode registers a Node as kubelet and the controller manager would:
// with an InternalIP and, unless podCIDR is empty, a pod CIDR.
func createNode(t *testing.T, env *kubeenv.Env, name, podCIDR, internalIP string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if podCIDR != "" {
		n.Spec = corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}
	}
	// A freshly started API server may reset a connection or two; client-go
	// retries no POST, so the test does (an earlier try that landed shows
	// up as AlreadyExists).
	eventually(t, 15*time.Second, func() error {
		_, err := env.Client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if internalIP != "" {
		setInternalIP(t, env, name, internalIP)
	}
}

func TestKubernetesAPIServerDownAndNotReadyUntilPodCIDR(t *testing.T) {
	c, env := kubeCluster(t)
	ctx := context.Background()
	var pods []*pod
	for i := 1; i <= 3; i++ {
		n := c.start(fmt.Sprintf("node-%d", i))
		c.waitReady(n, 30*time.Second)
	}
	for i := 1; i <= 3; i++ {
		n := c.nodes[fmt.Sprintf("node-%d", i)]
		pods = append(pods, c.addPod(n), c.addPod(n))
	}
	waitRoutes(t, c, 2)
	pingAll(t, pods)
	node1, err := env.Client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node1.Annotations[kube.AnnotationUnderlayIP] != c.nodes["node-1"].IP.String() || node1.Annotations[kube.AnnotationVTEPMAC] == "" {
		t.Fatalf("node-1 annotations: %v", node1.Annotations)
	}

	t.Run("healthy but no conflist and not ready until the Node has a pod CIDR", func(t *testing.T) {
		c.allocate = true // the Node gets no pod CIDR; droverd does not claim one
		n := c.add("node-late")
		c.allocate = false
		c.start("node-late")
		// Waiting for the controller manager is no reason for the liveness
		// probe to restart droverd: /healthz says alive throughout, from
		// its first answer (the process binds it in its own time).
		eventually(t, 15*time.Second, func() error {
			if code, body, err := httpGet(n.NS, "http://127.0.0.1:9436/healthz"); code != 200 {
				return fmt.Errorf("/healthz = %d %q (%v) after droverd started, want 200", code, body, err)
			}
			return nil
		})
		for i := 0; i < 3; i++ {
			time.Sleep(1500 * time.Millisecond)
			if code, body, err := httpGet(n.NS, "http://127.0.0.1:9436/healthz"); code != 200 {
				t.Fatalf("/healthz = %d %q (%v) while waiting for the pod CIDR, want 200", code, body, err)
			}
		}
		if _, err := os.Stat(n.conflist()); err == nil {
			t.Fatal("droverd wrote the conflist before the node had a pod CIDR")
		}
		if code, _, _ := httpGet(n.NS, "http://127.0.0.1:9436/readyz"); code != 503 {
			t.Fatalf("/readyz = %d before the pod CIDR is known, want 503", code)
		}
		patch := []byte(`{"spec":{"podCIDR":"10.244.99.0/24","podCIDRs":["10.244.99.0/24"]}}`)
		if _, err := env.Client.CoreV1().Nodes().Patch(ctx, "node-late", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		c.waitReady(n, 30*time.Second)
		p := c.addPod(n)
		eventually(t, 15*time.Second, func() error { return testcluster.Ping(pods[0].ns, p.ip, 1) })
		c.removeNode("node-late")
		waitRoutes(t, c, 2)
	})

	pids := env.PIDs()
	apiserver := pids[len(pids)-1]
	t.Run("with the API server stopped a restarted droverd adopts its state and repairs; back, every agent picks up a new peer", func(t *testing.T) {
		// SIGSTOP is a stall: the kernel still completes handshakes and
		// holds connections, but nothing answers.
		if err := syscall.Kill(apiserver, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				_ = syscall.Kill(apiserver, syscall.SIGCONT)
			}
		}
		defer resume()
		duringOutage(t, c, pods)
		resume()
		newPeerReachesEveryone(t, c, pods, "node-4")
	})

	t.Run("with the API server black-holed a restarted droverd adopts its state and repairs; back, every agent picks up a new peer", func(t *testing.T) {
		// A real outage seen from the nodes: packets to the API server's
		// port vanish (no RST, no answer), as when its host dies. The test
		// process reaches the server over the control plane's loopback.
		rule := []string{"INPUT", "-i", "eth0", "-p", "tcp", "--dport", env.Host()[strings.LastIndex(env.Host(), ":")+1:], "-j", "DROP"}
		if out, err := testcluster.Exec(c.cp.NS, "iptables", append([]string{"-w", "-I"}, rule...)...); err != nil {
			t.Fatalf("black-hole the API server: %v %s", err, out)
		}
		lifted := false
		lift := func() {
			if !lifted {
				lifted = true
				if out, err := testcluster.Exec(c.cp.NS, "iptables", append([]string{"-w", "-D"}, rule...)...); err != nil {
					t.Errorf("lift the black hole: %v %s", err, out)
				}
			}
		}
		defer lift()
		duringOutage(t, c, pods)
		lift()
		newPeerReachesEveryone(t, c, pods, "node-5")
	})
}

// duringOutage restarts node-1's droverd while the API server cannot be
// reached and checks that it serves: alive, ready with the pod CIDR of its
// previous run, pods across nodes still talking, a new pod's ADD working,
// and a hand-deleted route to a peer it knew repaired.
func duringOutage(t *testing.T, c *cluster, pods []*pod) {
	t.Helper()
	n1 := c.nodes["node-1"]
	c.stop("node-1", syscall.SIGKILL)
	c.start("node-1")
	// One PodCIDR attempt runs into its request deadline (10s) first.
	eventually(t, 40*time.Second, func() error {
		code, body, err := httpGet(n1.NS, "http://127.0.0.1:9436/readyz")
		if code != 200 {
			return fmt.Errorf("/readyz = %d %q %v", code, body, err)
		}
		if code, body, err := httpGet(n1.NS, "http://127.0.0.1:9436/healthz"); code != 200 {
			return fmt.Errorf("/healthz = %d %q %v", code, body, err)
		}
		return nil
	})
	if err := testcluster.Ping(pods[0].ns, pods[2].ip, 3); err != nil {
		t.Fatalf("pods lost each other during the outage: %v", err)
	}
	peer := &net.IPNet{IP: pods[2].ip.Mask(net.CIDRMask(24, 32)), Mask: net.CIDRMask(24, 32)}
	err := n1.NS.Do(func(ns.NetNS) error {
		return netlink.RouteDel(&netlink.Route{Dst: peer, Protocol: overlay.RouteProtocol})
	})
	if err != nil {
		t.Fatalf("delete node-1's route to node-2: %v", err)
	}
	eventually(t, 15*time.Second, func() error {
		if !slices.Contains(droverRoutes(t, n1), peer.String()) {
			return fmt.Errorf("route to %s not repaired during the outage", peer)
		}
		return testcluster.Ping(pods[0].ns, pods[2].ip, 1)
	})
	late := c.addPod(n1)
	if err := testcluster.Ping(late.ns, pods[4].ip, 1); err != nil {
		t.Fatalf("a pod added during the outage: %v", err)
	}
}

// newPeerReachesEveryone starts a new node once the API server is back and
// waits until a pod on every long-running node reaches a pod on it: each
// agent's informer must have reconnected by itself.
func newPeerReachesEveryone(t *testing.T, c *cluster, pods []*pod, name string) {
	t.Helper()
	n := c.start(name)
	c.waitReady(n, 60*time.Second)
	p := c.addPod(n)
	start := time.Now()
	for _, from := range []*pod{pods[0], pods[2], pods[4]} {
		eventually(t, 120*time.Second, func() error { return testcluster.Ping(from.ns, p.ip, 1) })
	}
	t.Logf("every node reached %s %s after the API server came back", name, time.Since(start).Round(time.Second))
}

// addDefaultRouteLink gives a node a second link that holds its default
// route, so droverd picking "the default route's interface" would pick the
// wrong one: only the Node's InternalIP leads to eth0.
func addDefaultRouteLink(t *testing.T, n *node) {
	t.Helper()
	err := n.NS.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mgmt0"}, PeerName: "mgmt1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		for _, name := range []string{"mgmt0", "mgmt1"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		mgmt, err := netlink.LinkByName("mgmt0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(mgmt, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 10), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		return netlink.RouteReplace(&netlink.Route{LinkIndex: mgmt.Attrs().Index, Gw: net.IPv4(192, 0, 2, 1)})
	})
	if err != nil {
		t.Fatalf("second link on %s: %v", n.Name, err)
	}
}

func annotations(t *testing.T, env *kubeenv.Env, name string) map[string]string {
	t.Helper()
	n, err := env.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, "drover.io/") {
			out[k] = v
		}
	}
	if n.Spec.PodCIDR != "" {
		out["spec.podCIDR"] = n.Spec.PodCIDR
	}
	return out
}

func TestKubernetesSelfAllocatedNodesByInternalIPKeepTheirRecords(t *testing.T) {
	c, env := kubeCluster(t)
	c.allocate = true
	ctx := context.Background()
	var pods []*pod
	for i := 1; i <= 3; i++ {
		n := c.add(fmt.Sprintf("node-%d", i))
		n.noUnderlayFlag = true
		addDefaultRouteLink(t, n)
		c.start(n.Name)
	}
	for i := 1; i <= 3; i++ {
		n := c.nodes[fmt.Sprintf("node-%d", i)]
		c.waitReady(n, 30*time.Second)
		pods = append(pods, c.addPod(n))
	}
	waitRoutes(t, c, 2)
	pingAll(t, pods)

	records := map[string]map[string]string{}
	cidrs := map[string]string{}
	for i := 1; i <= 3; i++ {
		n := c.nodes[fmt.Sprintf("node-%d", i)]
		a := annotations(t, env, n.Name)
		records[n.Name] = a
		cidr := a[kube.AnnotationPodCIDR]
		if a["spec.podCIDR"] != "" || cidr == "" || !strings.HasPrefix(cidr, "10.244.") || cidrs[cidr] != "" {
			t.Fatalf("%s: want a self-allocated, distinct pod CIDR only in the annotation: %v (others %v)", n.Name, a, cidrs)
		}
		cidrs[cidr] = n.Name
		if a[kube.AnnotationUnderlayIP] != n.IP.String() {
			t.Fatalf("%s published underlay %s, want its InternalIP %s on eth0, not the default route's link", n.Name, a[kube.AnnotationUnderlayIP], n.IP)
		}
		err := n.NS.Do(func(ns.NetNS) error {
			eth0, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			l, err := netlink.LinkByName("drover.vxlan")
			if err != nil {
				return err
			}
			vx := l.(*netlink.Vxlan)
			if !vx.SrcAddr.Equal(n.IP) || vx.VtepDevIndex != eth0.Attrs().Index {
				return fmt.Errorf("VXLAN device local %s on link %d, want %s on eth0 (%d)", vx.SrcAddr, vx.VtepDevIndex, n.IP, eth0.Attrs().Index)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
	}
	cm, err := env.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, "drover-pod-cidrs", metav1.GetOptions{})
	if err != nil || len(cm.Data) != 3 {
		t.Fatalf("claims ConfigMap: %v, %v", cm, err)
	}
	n1 := c.nodes["node-1"]
	node2CIDR := records["node-2"][kube.AnnotationPodCIDR]

	t.Run("annotations removed by hand come back", func(t *testing.T) {
		if err := kube.RemoveAnnotations(ctx, env.Client, "node-2"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, func() error {
			if got := annotations(t, env, "node-2"); !maps.Equal(got, records["node-2"]) {
				return fmt.Errorf("node-2 record %v, want %v", got, records["node-2"])
			}
			return nil
		})
		eventually(t, 15*time.Second, func() error { return testcluster.Ping(pods[0].ns, pods[1].ip, 1) })
	})

	t.Run("a re-created Node gets its record and its subnet back", func(t *testing.T) {
		if err := env.Client.CoreV1().Nodes().Delete(ctx, "node-2", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, func() error {
			if slices.Contains(droverRoutes(t, n1), node2CIDR) {
				return fmt.Errorf("node-1 still routes to the deleted node-2")
			}
			return nil
		})
		createNode(t, env, "node-2", "", c.nodes["node-2"].IP.String())
		eventually(t, 20*time.Second, func() error {
			if got := annotations(t, env, "node-2"); !maps.Equal(got, records["node-2"]) {
				return fmt.Errorf("node-2 record %v, want %v", got, records["node-2"])
			}
			return nil
		})
		eventually(t, 15*time.Second, func() error { return testcluster.Ping(pods[0].ns, pods[1].ip, 1) })
	})

	t.Run("a peer claiming a node's subnet is refused everywhere and routes stay", func(t *testing.T) {
		rogue := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-z", Annotations: map[string]string{
			kube.AnnotationPodCIDR: node2CIDR, kube.AnnotationUnderlayIP: "198.51.100.99",
			kube.AnnotationVTEPMAC: "0a:11:22:33:44:55",
		}}}
		if _, err := env.Client.CoreV1().Nodes().Create(ctx, rogue, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			n := c.nodes[fmt.Sprintf("node-%d", i)]
			eventually(t, 15*time.Second, func() error {
				_, metrics, err := httpGet(n.NS, "http://127.0.0.1:9436/metrics")
				if err != nil || !strings.Contains(metrics, "drover_overlay_peers_rejected 1") {
					return fmt.Errorf("%s: %v %s", n.Name, err, grepLines(metrics, "drover_overlay_peers"))
				}
				return nil
			})
		}
		// node-2 keeps its subnet on node-1: the route still goes to
		// node-2's VTEP, and pods there answer.
		err := n1.NS.Do(func(ns.NetNS) error {
			rs, err := netlink.RouteGet(pods[1].ip)
			if err != nil {
				return err
			}
			if want := net.ParseIP(strings.TrimSuffix(node2CIDR, "/24")); !rs[0].Gw.Equal(want) {
				return fmt.Errorf("route to %s via %v, want node-2's VTEP %s", pods[1].ip, rs[0].Gw, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := testcluster.Ping(pods[0].ns, pods[1].ip, 2); err != nil {
			t.Fatal(err)
		}
		if err := testcluster.Ping(pods[2].ns, pods[1].ip, 2); err != nil {
			t.Fatal(err)
		}
		// The rejection is counted before it is logged.
		eventually(t, 10*time.Second, func() error {
			if logs, _ := os.ReadFile(n1.dir + "/droverd.log"); !strings.Contains(string(logs), "node-z: pod CIDR "+node2CIDR+" overlaps") {
				return fmt.Errorf("node-1 did not log why node-z was rejected:\n%s", tail(string(logs), 10))
			}
			return nil
		})
	})

	t.Run("a node renumbered with its InternalIP is followed without a restart", func(t *testing.T) {
		n3 := c.nodes["node-3"]
		// As a new DHCP lease does, then kubelet: the address moves on
		// eth0, and the Node's InternalIP follows.
		newIP := net.IPv4(198, 51, 100, 43).To4()
		oldIP := renumber(t, n3, newIP)
		setInternalIP(t, env, "node-3", newIP.String())

		eventually(t, 20*time.Second, func() error {
			if got := annotations(t, env, "node-3")[kube.AnnotationUnderlayIP]; got != newIP.String() {
				return fmt.Errorf("node-3 publishes underlay %s, want %s", got, newIP)
			}
			return nil
		})
		peersFollow(t, c, n3, records["node-3"][kube.AnnotationVTEPMAC], oldIP, "node-1", "node-2")
		eventually(t, 15*time.Second, func() error {
			for _, p := range pods[:2] {
				if err := testcluster.Ping(p.ns, pods[2].ip, 1); err != nil {
					return err
				}
				if err := testcluster.Ping(pods[2].ns, p.ip, 1); err != nil {
					return err
				}
			}
			return nil
		})
		// node-3 may publish its new address from the link that held the
		// old one before its own watch delivers the new InternalIP, which
		// is when it logs the change: wait for that line.
		eventually(t, 20*time.Second, func() error {
			if logs, _ := os.ReadFile(n3.dir + "/droverd.log"); !strings.Contains(string(logs), "node InternalIP changed") {
				return fmt.Errorf("node-3 did not log the InternalIP change:\n%s", tail(string(logs), 10))
			}
			return nil
		})
	})
}

// setInternalIP updates a Node's InternalIP as kubelet does on a new
// address.
func setInternalIP(t *testing.T, env *kubeenv.Env, name, ip string) {
	t.Helper()
	eventually(t, 15*time.Second, func() error {
		cur, err := env.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
		_, err = env.Client.CoreV1().Nodes().UpdateStatus(context.Background(), cur, metav1.UpdateOptions{})
		return err
	})
}
