// Package scalebench measures droverd against a real kube-apiserver holding
// many Node objects: the time from agent start until every peer is
// programmed, the agent's peak RSS, and the time from a new Node written to
// the API until its route exists on the node. Run by scripts/bench-scale.sh
// (`make bench`); not part of `make test`.
package scalebench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/drover-net/drover/internal/kubeenv"
	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/pkg/kube"
	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

func BenchmarkPeers1000(b *testing.B) { benchPeers(b, 1000, 50) }
func BenchmarkPeers5000(b *testing.B) { benchPeers(b, 5000, 0) }

// peerNode is the i-th synthetic node: a /24 of 10.0.0.0/8 and an underlay
// address in 198.18.0.0/15 (the benchmarking range), never contacted.
func peerNode(i int) *corev1.Node {
	name := fmt.Sprintf("peer-%05d", i)
	cidr := fmt.Sprintf("10.%d.%d.0/24", 1+i/256, i%256)
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			kube.AnnotationVTEPMAC:    vxlan.MACForNode(name).String(),
			kube.AnnotationUnderlayIP: fmt.Sprintf("198.18.%d.%d", i/250, 1+i%250),
		}},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
	}
}

func createNodes(b *testing.B, c kubernetes.Interface, from, to int) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if _, err := c.CoreV1().Nodes().Create(context.Background(), peerNode(i), metav1.CreateOptions{}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatalf("create nodes: %v", err)
	default:
	}
}

func routeCount(b *testing.B, n ns.NetNS) int {
	count := 0
	err := n.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		count = len(rs)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return count
}

func peakRSSMB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return float64(kb) / 1024
		}
	}
	return -1
}

func benchPeers(b *testing.B, peers, joins int) {
	for i := 0; i < b.N; i++ {
		u := testcluster.NewUnderlay(b)
		cp := u.AddHost(b, "control-plane", net.IPv4(198, 51, 100, 2))
		node := u.AddNode(b, "bench-node")
		env := kubeenv.Start(b, kubeenv.Options{NetNS: cp.NS.Path(), Address: cp.IP.String()})
		cfg := *env.Config
		cfg.QPS, cfg.Burst = 2000, 2000
		c, err := kubernetes.NewForConfig(&cfg)
		if err != nil {
			b.Fatal(err)
		}
		own := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-node"}, Spec: corev1.NodeSpec{PodCIDR: "10.0.0.0/24", PodCIDRs: []string{"10.0.0.0/24"}}}
		if _, err := c.CoreV1().Nodes().Create(context.Background(), own, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		createNodes(b, c, 0, peers)

		bin := filepath.Join(b.TempDir(), "droverd")
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/drover-net/drover/cmd/droverd").CombinedOutput(); err != nil {
			b.Fatalf("build droverd: %v\n%s", err, out)
		}
		dir := b.TempDir()
		var cmd *exec.Cmd
		start := time.Now()
		err = node.NS.Do(func(ns.NetNS) error {
			cmd = exec.Command(bin, "--node-name", "bench-node", "--datastore", "kubernetes", "--kubeconfig", env.Kubeconfig,
				"--cluster-cidr", "10.0.0.0/8", "--underlay-iface", "eth0", "--state-file", filepath.Join(dir, "node.json"),
				"--ipam-dir", filepath.Join(dir, "ipam"), "--cni-conf-dir", filepath.Join(dir, "net.d"), "--listen", "", "--masquerade=false")
			log, _ := os.Create(filepath.Join(dir, "droverd.log"))
			cmd.Stdout, cmd.Stderr = log, log
			return cmd.Start()
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		for routeCount(b, node.NS) < peers {
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("only %d of %d peers programmed after 5 minutes", routeCount(b, node.NS), peers)
			}
			time.Sleep(10 * time.Millisecond)
		}
		programmed := time.Since(start)
		rss := peakRSSMB(cmd.Process.Pid)
		b.ReportMetric(programmed.Seconds(), "s-to-program")
		b.ReportMetric(rss, "MB-peak-RSS")
		fmt.Printf("| %d peers | programmed %.2f s after start | peak RSS %.1f MB |\n", peers, programmed.Seconds(), rss)

		if joins == 0 {
			continue
		}
		lat := measureJoins(b, c, node, peers, joins)
		p50, p99 := lat[len(lat)/2], lat[(len(lat)*99+99)/100-1]
		b.ReportMetric(p50.Seconds(), "s-join-p50")
		b.ReportMetric(p99.Seconds(), "s-join-p99")
		fmt.Printf("| %d joins | API write to route: p50 %.3f s | p99 %.3f s |\n", joins, p50.Seconds(), p99.Seconds())
	}
}

// measureJoins writes new Nodes one at a time and times each until its
// route exists on the node, watching netlink route events in the node's
// namespace.
func measureJoins(b *testing.B, c kubernetes.Interface, node *testcluster.Node, from, joins int) []time.Duration {
	updates := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	h, err := netnsHandle(node.NS)
	if err != nil {
		b.Fatal(err)
	}
	if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for j := 0; j < joins; j++ {
		n := peerNode(from + j)
		want := n.Spec.PodCIDR
		t0 := time.Now()
		if _, err := c.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
	wait:
		for {
			select {
			case u := <-updates:
				if u.Dst != nil && u.Dst.String() == want && u.Protocol == overlay.RouteProtocol {
					lat = append(lat, time.Since(t0))
					break wait
				}
			case <-deadline:
				b.Fatalf("route to %s never appeared", want)
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}
