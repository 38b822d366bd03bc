package overlay_test

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drover-net/drover/internal/kubeenv"
	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/pkg/kube"
)

// kubeCluster is a netns cluster whose droverds use a real kube-apiserver
// running in a control-plane namespace on the underlay.
func kubeCluster(t *testing.T) (*cluster, *kubeenv.Env) {
	c := newCluster(t)
	cp := c.u.AddHost(t, "control-plane", net.IPv4(198, 51, 100, 2))
	env := kubeenv.Start(t, kubeenv.Options{NetNS: cp.NS.Path(), Address: cp.IP.String()})
	c.dsArgs = []string{"--datastore", "kubernetes", "--kubeconfig", env.Kubeconfig}
	return c, env
}

func createNode(t *testing.T, env *kubeenv.Env, name, podCIDR string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}}
	if _, err := env.Client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
}

func TestKubernetesDatastoreEndToEnd(t *testing.T) {
	c, env := kubeCluster(t)
	ctx := context.Background()
	var pods []*pod
	for i := 1; i <= 3; i++ {
		createNode(t, env, fmt.Sprintf("node-%d", i), fmt.Sprintf("10.244.%d.0/24", i))
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

	t.Run("a deleted Node's routes vanish from its peers", func(t *testing.T) {
		c.stop("node-3", syscall.SIGTERM)
		if err := env.Client.CoreV1().Nodes().Delete(ctx, "node-3", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"node-1", "node-2"} {
			n := c.nodes[name]
			eventually(t, 10*time.Second, func() error {
				if r := droverRoutes(t, n); len(r) != 1 {
					return fmt.Errorf("%s routes %v, want only the remaining peer", name, r)
				}
				return nil
			})
		}
		if err := testcluster.Ping(pods[0].ns, pods[2].ip, 1); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("with the API server stopped pods talk and a new pod's ADD works; back, a new peer is picked up", func(t *testing.T) {
		pids := env.PIDs()
		apiserver := pids[len(pids)-1]
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
		// A restarted agent must not touch the data path while it cannot
		// reach the API.
		c.stop("node-1", syscall.SIGKILL)
		c.start("node-1")
		time.Sleep(3 * time.Second)
		if err := testcluster.Ping(pods[0].ns, pods[2].ip, 3); err != nil {
			t.Fatalf("pods lost each other while the API server is stopped: %v", err)
		}
		late := c.addPod(c.nodes["node-1"])
		if err := testcluster.Ping(late.ns, pods[2].ip, 1); err != nil {
			t.Fatalf("a pod added while the API server is stopped: %v", err)
		}
		resume()

		createNode(t, env, "node-4", "10.244.4.0/24")
		n4 := c.start("node-4")
		c.waitReady(n4, 30*time.Second)
		p4 := c.addPod(n4)
		eventually(t, 30*time.Second, func() error { return testcluster.Ping(late.ns, p4.ip, 1) })
	})
}
