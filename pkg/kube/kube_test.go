package kube_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/drover-net/drover/internal/kubeenv"
	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/kube"
)

func createNode(t *testing.T, c kubernetes.Interface, name, podCIDR string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: podCIDR}}
	if podCIDR != "" {
		n.Spec.PodCIDRs = []string{podCIDR}
	}
	if _, err := c.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
}

func TestKubernetesDatastore(t *testing.T) {
	env := kubeenv.Start(t, kubeenv.Options{})
	ctx := context.Background()
	c := env.Client
	createNode(t, c, "node-a", "10.244.1.0/24")
	createNode(t, c, "node-b", "10.244.2.0/24")
	s := kube.New(kube.Config{Client: c})

	t.Run("the pod CIDR comes from spec.podCIDR", func(t *testing.T) {
		cidr, err := s.PodCIDR(ctx, "node-a")
		if err != nil || cidr.String() != "10.244.1.0/24" {
			t.Fatalf("PodCIDR = %v, %v", cidr, err)
		}
	})
	t.Run("the underlay default is the node's InternalIP", func(t *testing.T) {
		n, _ := c.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "node-a"}, {Type: corev1.NodeInternalIP, Address: "198.51.100.11"}}
		if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		ip, err := s.UnderlayIP(ctx, "node-a")
		if err != nil || ip.String() != "198.51.100.11" {
			t.Fatalf("UnderlayIP = %v, %v", ip, err)
		}
	})
	t.Run("a node without pod CIDR and no self-allocation is an error that says why", func(t *testing.T) {
		createNode(t, c, "node-bare", "")
		_, err := s.PodCIDR(ctx, "node-bare")
		if err == nil {
			t.Fatal("no error")
		}
		t.Log(err)
	})

	var mu sync.Mutex
	var views [][]datastore.Node
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = s.Watch(wctx, func(v []datastore.Node) {
			mu.Lock()
			views = append(views, v)
			mu.Unlock()
		})
	}()
	latest := func() []datastore.Node {
		mu.Lock()
		defer mu.Unlock()
		if len(views) == 0 {
			return nil
		}
		return views[len(views)-1]
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(views) }
	waitFor := func(what string, cond func([]datastore.Node) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond(latest()) {
			if time.Now().After(deadline) {
				t.Fatalf("watch never showed %s; last view %+v", what, latest())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	complete := func(v []datastore.Node, name string) bool {
		for _, n := range v {
			if n.Name == name && n.Complete() {
				return true
			}
		}
		return false
	}

	t.Run("published VTEPs reach watchers through nodes/status annotations", func(t *testing.T) {
		mac, _ := net.ParseMAC("0a:00:00:00:00:0b")
		err := s.Publish(ctx, datastore.Node{Name: "node-b", VTEPMAC: mac, UnderlayIP: net.IPv4(198, 51, 100, 12)})
		if err != nil {
			t.Fatal(err)
		}
		waitFor("node-b complete", func(v []datastore.Node) bool { return complete(v, "node-b") })
		n, _ := c.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		if n.Annotations[kube.AnnotationVTEPMAC] != "0a:00:00:00:00:0b" || n.Annotations[kube.AnnotationUnderlayIP] != "198.51.100.12" {
			t.Fatalf("annotations %v", n.Annotations)
		}
	})
	t.Run("status heartbeats that change nothing drover reads do not wake watchers", func(t *testing.T) {
		before := count()
		for i := 0; i < 5; i++ {
			n, _ := c.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), Reason: fmt.Sprint(i)}}
			if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(500 * time.Millisecond)
		if after := count(); after != before {
			t.Fatalf("heartbeats produced %d new views", after-before)
		}
	})
	t.Run("a changed InternalIP reaches watchers", func(t *testing.T) {
		n, _ := c.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "node-a"}, {Type: corev1.NodeInternalIP, Address: "198.51.100.111"}}
		if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor("node-a's new InternalIP", func(v []datastore.Node) bool {
			for _, n := range v {
				if n.Name == "node-a" {
					return n.InternalIP.Equal(net.IPv4(198, 51, 100, 111))
				}
			}
			return false
		})
	})
	t.Run("a deleted node leaves the view", func(t *testing.T) {
		if err := c.CoreV1().Nodes().Delete(ctx, "node-b", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor("node-b gone", func(v []datastore.Node) bool {
			for _, n := range v {
				if n.Name == "node-b" {
					return false
				}
			}
			return true
		})
	})
	t.Run("a stalled API server fails every call within the request timeout", func(t *testing.T) {
		pids := env.PIDs()
		apiserver := pids[len(pids)-1]
		// A SIGSTOPped server still completes TCP handshakes (the kernel
		// does) and holds established connections open: a request sent to
		// it gets no answer at all, as with a black-holed address.
		if err := syscall.Kill(apiserver, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = syscall.Kill(apiserver, syscall.SIGCONT) }()
		stalled := kube.New(kube.Config{Client: c, RequestTimeout: 2 * time.Second})
		mac, _ := net.ParseMAC("0a:00:00:00:00:0a")
		for name, call := range map[string]func() error{
			"PodCIDR":    func() error { _, err := stalled.PodCIDR(ctx, "node-a"); return err },
			"UnderlayIP": func() error { _, err := stalled.UnderlayIP(ctx, "node-a"); return err },
			"Publish": func() error {
				return stalled.Publish(ctx, datastore.Node{Name: "node-a", VTEPMAC: mac, UnderlayIP: net.IPv4(198, 51, 100, 11)})
			},
		} {
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- call() }()
			select {
			case err := <-done:
				if err == nil {
					t.Errorf("%s succeeded against a stopped API server", name)
				}
				t.Logf("%s failed after %s: %v", name, time.Since(start).Round(time.Millisecond), err)
			case <-time.After(30 * time.Second):
				t.Fatalf("%s still blocked after 30s against a stopped API server (2s request timeout)", name)
			}
		}
	})
	t.Run("uninstall removes the annotations", func(t *testing.T) {
		mac, _ := net.ParseMAC("0a:00:00:00:00:0a")
		if err := s.Publish(ctx, datastore.Node{Name: "node-a", VTEPMAC: mac, UnderlayIP: net.IPv4(198, 51, 100, 11)}); err != nil {
			t.Fatal(err)
		}
		if err := kube.RemoveAnnotations(ctx, c, "node-a"); err != nil {
			t.Fatal(err)
		}
		n, _ := c.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		for k := range n.Annotations {
			if len(k) > 10 && k[:10] == "drover.io/" {
				t.Fatalf("annotation %s survived", k)
			}
		}
		if err := kube.RemoveAnnotations(ctx, c, "no-such-node"); err != nil {
			t.Fatalf("missing node: %v", err)
		}
	})
}

func TestTenAgentsRacingNeverGetTheSameSubnet(t *testing.T) {
	env := kubeenv.Start(t, kubeenv.Options{})
	ctx := context.Background()
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	// One node already has a controller-assigned CIDR: nobody may claim it.
	createNode(t, env.Client, "assigned", "10.244.0.0/24")
	const agents = 12
	for round := 0; round < 2; round++ {
		names := make([]string, agents)
		for i := range names {
			names[i] = fmt.Sprintf("r%d-node-%d", round, i)
			createNode(t, env.Client, names[i], "")
		}
		got := make([]*net.IPNet, agents)
		errs := make([]error, agents)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Each agent has its own client, as separate processes do.
				c, err := kubernetes.NewForConfig(env.Config)
				if err != nil {
					errs[i] = err
					return
				}
				s := kube.New(kube.Config{Client: c, Allocation: &kube.Allocation{
					ClusterCIDR: cluster, NodeMask: 24, Namespace: "kube-system", ConfigMap: "drover-pod-cidrs"}})
				<-start
				got[i], errs[i] = s.PodCIDR(ctx, names[i])
			}()
		}
		close(start)
		wg.Wait()
		seen := map[string]string{"10.244.0.0/24": "assigned"}
		for i, cidr := range got {
			if errs[i] != nil {
				t.Fatalf("%s: %v", names[i], errs[i])
			}
			if other, dup := seen[cidr.String()]; dup {
				t.Fatalf("%s and %s both got %s", names[i], other, cidr)
			}
			seen[cidr.String()] = names[i]
			// The claim is stable: asking again returns the same subnet.
			again, err := kube.New(kube.Config{Client: env.Client, Allocation: &kube.Allocation{
				ClusterCIDR: cluster, NodeMask: 24, Namespace: "kube-system", ConfigMap: "drover-pod-cidrs"}}).PodCIDR(ctx, names[i])
			if err != nil || again.String() != cidr.String() {
				t.Fatalf("%s asked again: %v, %v; first %s", names[i], again, err, cidr)
			}
		}
	}
}

func TestClaimsOfDeletedNodesAreReusedOnlyWhenThePoolIsFull(t *testing.T) {
	env := kubeenv.Start(t, kubeenv.Options{})
	ctx := context.Background()
	c := env.Client
	// Four /24s in the pool.
	_, cluster, _ := net.ParseCIDR("10.250.0.0/22")
	store := kube.New(kube.Config{Client: c, Allocation: &kube.Allocation{
		ClusterCIDR: cluster, NodeMask: 24, Namespace: "kube-system", ConfigMap: "drover-pod-cidrs"}})
	claim := func(name string) (string, error) {
		cidr, err := store.PodCIDR(ctx, name)
		if err != nil {
			return "", err
		}
		return cidr.String(), nil
	}
	mustClaim := func(name string) string {
		t.Helper()
		got, err := claim(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return got
	}
	mustBeFull := func(name string) {
		t.Helper()
		if got, err := claim(name); !errors.Is(err, datastore.ErrNoFreeSubnet) {
			t.Fatalf("%s got %q, %v; want ErrNoFreeSubnet", name, got, err)
		}
	}
	deleteNode := func(name string) {
		t.Helper()
		if err := c.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	owned := map[string]string{}
	for i := 0; i < 4; i++ {
		name := fmt.Sprintf("q-%d", i)
		createNode(t, c, name, "")
		owned[name] = mustClaim(name)
	}
	createNode(t, c, "q-new", "")
	mustBeFull("q-new")

	// Deleted and re-registered (a new UID) before anyone needed its
	// subnet: the node gets its own subnet back and it stays taken.
	deleteNode("q-1")
	createNode(t, c, "q-1", "")
	if got := mustClaim("q-1"); got != owned["q-1"] {
		t.Fatalf("re-registered q-1 got %s, had %s", got, owned["q-1"])
	}
	mustBeFull("q-new")

	// Deleted for good: its subnet goes to the next node that needs one.
	deleteNode("q-2")
	if got := mustClaim("q-new"); got != owned["q-2"] {
		t.Fatalf("q-new got %s, want the deleted q-2's %s", got, owned["q-2"])
	}
	// q-2 coming back later does not get it back: q-new's claim is live.
	createNode(t, c, "q-2", "")
	mustBeFull("q-2")
	if got := mustClaim("q-new"); got != owned["q-2"] {
		t.Fatalf("q-new's claim moved to %s", got)
	}
	cm, err := c.CoreV1().ConfigMaps("kube-system").Get(ctx, "drover-pod-cidrs", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cm.Data) != 4 {
		t.Fatalf("claims %v, want exactly four (the reused one replaced, not added)", cm.Data)
	}
	owners := map[string]bool{}
	for k, v := range cm.Data {
		if owners[v] {
			t.Fatalf("two claims for %s: %v", v, cm.Data)
		}
		owners[v] = true
		t.Logf("%s -> %s", k, v)
	}
}
