package overlay_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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
	c.env = env
	return c, env
}

func createNode(t *testing.T, env *kubeenv.Env, name, podCIDR string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}}
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

	t.Run("no conflist and not ready until the Node has a pod CIDR", func(t *testing.T) {
		n := &node{Node: c.u.AddNode(t, "node-late"), dir: t.TempDir()}
		c.nodes["node-late"] = n
		t.Cleanup(func() { c.stop("node-late", syscall.SIGKILL) })
		late := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-late"}}
		if _, err := env.Client.CoreV1().Nodes().Create(ctx, late, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.start("node-late")
		time.Sleep(3 * time.Second)
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
		if err := testcluster.Ping(late.ns, pods[4].ip, 1); err != nil {
			t.Fatalf("a pod added while the API server is stopped: %v", err)
		}
		resume()

		n4 := c.start("node-4")
		c.waitReady(n4, 30*time.Second)
		p4 := c.addPod(n4)
		eventually(t, 30*time.Second, func() error { return testcluster.Ping(late.ns, p4.ip, 1) })
	})
}
