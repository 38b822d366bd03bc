//go:build e2e && e2ebench

package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	benchPodsPerNode = 30
	benchInFlight    = 3 // pods starting at once per node
)

// TestBenchPodStartup measures pod startup latency (API create -> phase
// Running) over benchPodsPerNode pods per node on three nodes, first with
// drover, then, on the same nodes in the same run, with the reference
// bridge + host-local plugins, and reports p50, p99 and their ratio.
func TestBenchPodStartup(t *testing.T) {
	c := newCluster(t)
	for range 3 {
		c.addNode(t)
	}
	for _, n := range c.nodes {
		n.startDroverd(t)
	}
	for _, n := range c.nodes {
		c.waitNodeReady(t, n, 90*time.Second)
	}
	drover := c.podStartup(t, "drover")

	// Switch every node to the reference plugins: droverd stops (its data
	// path stays), its conflist goes, a bridge + host-local one comes, with
	// ipMasq as drover's pods have masquerade (droverd's one rule per node;
	// the bridge plugin makes a chain per pod).
	for i, n := range c.nodes {
		n.droverd.stop(10 * time.Second)
		if err := os.Remove(n.conflist()); err != nil {
			t.Fatal(err)
		}
		ref := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ref","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,
"ipam":{"type":"host-local","ranges":[[{"subnet":"10.245.%d.0/24"}]],"dataDir":%q}},
{"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}`, i+1, n.path("run", "host-local"))
		if err := os.WriteFile(filepath.Join(n.cniConf(), "20-ref.conflist"), []byte(ref), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second) // containerd reloads on the directory event
	bridge := c.podStartup(t, "bridge")

	p50d, p99d := percentile(drover, 50), percentile(drover, 99)
	p50b, p99b := percentile(bridge, 50), percentile(bridge, 99)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	table := fmt.Sprintf("%d pods per node on %d nodes, %d starting at a time per node.\n\n", benchPodsPerNode, len(c.nodes), benchInFlight) +
		"| CNI plugin | p50 | p99 |\n|---|---|---|\n" +
		fmt.Sprintf("| drover (conflist by droverd, portmap chained) | %s | %s |\n", ms(p50d), ms(p99d)) +
		fmt.Sprintf("| reference bridge + host-local, portmap chained | %s | %s |\n", ms(p50b), ms(p99b)) +
		fmt.Sprintf("| drover / reference | %.2f× | %.2f× |\n", float64(p50d)/float64(p50b), float64(p99d)/float64(p99b))
	t.Logf("pod startup (API create -> Running):\n%s", table)
	if out := os.Getenv("DROVER_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// podStartup starts benchPodsPerNode pods on every node, benchInFlight at a
// time per node (all at once would measure the 2-core machine's queue, not
// the pod's start), records each one's time from create to Running, then
// deletes them and waits for them to go.
func (c *cluster) podStartup(t *testing.T, tag string) []time.Duration {
	t.Helper()
	ctx := context.Background()
	pods := c.env.Client.CoreV1().Pods(namespace)
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	for _, n := range c.nodes {
		sem := make(chan struct{}, benchInFlight)
		for i := range benchPodsPerNode {
			name := fmt.Sprintf("%s-%s-%d", tag, n.Name, i)
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				d, err := c.startOne(ctx, name, n)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				lat = append(lat, d)
			})
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%s: %d pods failed to start, first: %v", tag, len(errs), errs[0])
	}
	list, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		_ = pods.Delete(ctx, p.Name, metav1.DeleteOptions{})
	}
	for _, p := range list.Items {
		c.deletePod(t, p.Name, 3*time.Minute)
	}
	return lat
}

// startOne creates a pod and polls it until Running.
func (c *cluster) startOne(ctx context.Context, name string, n *node) (time.Duration, error) {
	no, grace := false, int64(2)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName: n.Name, AutomountServiceAccountToken: &no, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever}},
		},
	}
	pods := c.env.Client.CoreV1().Pods(namespace)
	start := time.Now()
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	for time.Since(start) < 3*time.Minute {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			return time.Since(start), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("pod %s not Running after 3 minutes", name)
}

func percentile(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}
