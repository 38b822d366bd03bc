package kubeenv

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// TestAPIServer shares one environment among its subtests: starting one
// costs several seconds, and the subtests use disjoint objects.
func TestAPIServer(t *testing.T) {
	e := Start(t, Options{})
	t.Run("Node objects can be created, listed, watched and patched", func(t *testing.T) {
		testNodes(t, e)
	})
	t.Run("an informer syncs and sees updates", func(t *testing.T) {
		testInformer(t, e)
	})
	t.Run("RBAC answers for a ServiceAccount by its roles", func(t *testing.T) {
		testRBAC(t, e)
	})
	t.Run("a process inside the namespace reaches the server with a kubeconfig", func(t *testing.T) {
		out, err := runHelperIn(t, e.NetNS, e.Kubeconfig)
		if err != nil || !strings.HasPrefix(out, "nodes:") {
			t.Fatalf("helper in %s: %v\n%s", e.NetNS, err, out)
		}
	})
}

func newNode(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"test": "kubeenv"}}}
}

func testNodes(t *testing.T, e *Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := e.Client.CoreV1().Nodes()
	for _, name := range []string{"node-a", "node-b"} {
		if _, err := nodes.Create(ctx, newNode(name), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	list, err := nodes.List(ctx, metav1.ListOptions{LabelSelector: "test=kubeenv"})
	if err != nil {
		t.Fatalf("list nodes: %v", err)
	}
	if len(list.Items) != 2 {
		t.Fatalf("listed %d nodes, want 2", len(list.Items))
	}

	w, err := nodes.Watch(ctx, metav1.ListOptions{
		FieldSelector:   "metadata.name=node-a",
		ResourceVersion: list.ResourceVersion,
	})
	if err != nil {
		t.Fatalf("watch nodes: %v", err)
	}
	defer w.Stop()

	// Through the status subresource, as droverd publishes its VTEP: the
	// annotation and the address are stored, a spec change is not.
	patch := `{"metadata":{"annotations":{"drover.io/vtep-mac":"02:00:00:00:00:01"}},` +
		`"spec":{"podCIDR":"10.244.7.0/24"},` +
		`"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.10"}]}}`
	patched, err := nodes.Patch(ctx, "node-a", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	if err != nil {
		t.Fatalf("patch nodes/status: %v", err)
	}
	if got := patched.Annotations["drover.io/vtep-mac"]; got != "02:00:00:00:00:01" {
		t.Errorf("annotation after status patch = %q", got)
	}
	if patched.Spec.PodCIDR != "" {
		t.Errorf("status patch changed spec.podCIDR to %q", patched.Spec.PodCIDR)
	}
	if len(patched.Status.Addresses) != 1 || patched.Status.Addresses[0].Address != "192.0.2.10" {
		t.Errorf("status addresses after patch = %v", patched.Status.Addresses)
	}
	// And the main resource: the spec change that status ignored.
	if _, err := nodes.Patch(ctx, "node-a", types.MergePatchType,
		[]byte(`{"spec":{"podCIDR":"10.244.7.0/24"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch node spec: %v", err)
	}

	var sawAnnotation, sawCIDR bool
	for !sawAnnotation || !sawCIDR {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("watch closed early")
			}
			if ev.Type != watch.Modified {
				t.Fatalf("watch event %s, want MODIFIED: %v", ev.Type, ev.Object)
			}
			n := ev.Object.(*corev1.Node)
			sawAnnotation = sawAnnotation || n.Annotations["drover.io/vtep-mac"] != ""
			sawCIDR = sawCIDR || n.Spec.PodCIDR == "10.244.7.0/24"
		case <-ctx.Done():
			t.Fatalf("watch saw annotation=%v podCIDR=%v before timeout", sawAnnotation, sawCIDR)
		}
	}
}

// testInformer runs the client-go informer path droverd uses. client-go
// v0.37 first tries a WatchList stream, which etcd older than 3.4.31 cannot
// serve; the reflector then falls back to LIST+WATCH, which this proves.
func testInformer(t *testing.T, e *Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	factory := informers.NewSharedInformerFactory(e.Client, 0)
	inf := factory.Core().V1().Nodes().Informer()
	updated := make(chan string, 10)
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) {
			if n, ok := obj.(*corev1.Node); ok && n.Labels["informer"] == "seen" {
				updated <- n.Name
			}
		},
	}); err != nil {
		t.Fatalf("add handler: %v", err)
	}
	if _, err := e.Client.CoreV1().Nodes().Create(ctx, newNode("node-inf"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node-inf: %v", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("node informer did not sync")
	}
	if _, ok, _ := inf.GetStore().GetByKey("node-inf"); !ok {
		t.Fatal("synced informer lacks node-inf")
	}
	if _, err := e.Client.CoreV1().Nodes().Patch(ctx, "node-inf", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"informer":"seen"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("label node-inf: %v", err)
	}
	select {
	case name := <-updated:
		if name != "node-inf" {
			t.Errorf("update for %s, want node-inf", name)
		}
	case <-ctx.Done():
		t.Fatal("informer saw no update")
	}
	cancel()
}
