// Package scalebench measures droverd against a real kube-apiserver holding
// many Node objects: the time from agent start until every peer is
// programmed (its route, neighbour and FDB entry all in the kernel), the
// agent's peak RSS, and the time from a new Node written to the API until
// all three exist on the node. Run by scripts/bench-scale.sh (`make
// bench`); not part of `make test`.
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
	"golang.org/x/sys/unix"
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

// programmed counts, in the node's namespace, drover's routes, the
// permanent neighbours and the FDB entries with a destination on the VXLAN
// device: a peer is programmed once it has all three, so the smallest of
// the counts is the number of programmed peers.
func programmed(b *testing.B, n ns.NetNS) int {
	var routes, neighs, fdb int
	err := n.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		routes = len(rs)
		dev, err := netlink.LinkByName(vxlan.DefaultName)
		if err != nil {
			return nil // not created yet
		}
		ns4, err := netlink.NeighList(dev.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, e := range ns4 {
			if e.State&netlink.NUD_PERMANENT != 0 {
				neighs++
			}
		}
		br, err := netlink.NeighList(dev.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, e := range br {
			if e.IP != nil && !e.IP.IsUnspecified() {
				fdb++
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return min(routes, neighs, fdb)
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
		for programmed(b, node.NS) < peers {
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("only %d of %d peers programmed after 5 minutes", programmed(b, node.NS), peers)
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		rss := peakRSSMB(cmd.Process.Pid)
		b.ReportMetric(took.Seconds(), "s-to-program")
		b.ReportMetric(rss, "MB-peak-RSS")
		fmt.Printf("| %d peers | programmed (route, neighbour, FDB each) %.2f s after start | peak RSS %.1f MB |\n", peers, took.Seconds(), rss)

		if joins == 0 {
			continue
		}
		lat := measureJoins(b, c, node, peers, joins)
		p50, p99 := lat[len(lat)/2], lat[(len(lat)*99+99)/100-1]
		b.ReportMetric(p50.Seconds(), "s-join-p50")
		b.ReportMetric(p99.Seconds(), "s-join-p99")
		fmt.Printf("| %d joins | API write to route, neighbour and FDB: p50 %.3f s | p99 %.3f s |\n", joins, p50.Seconds(), p99.Seconds())
	}
}

// measureJoins writes new Nodes one at a time and times each until its
// route, neighbour and FDB entry all exist on the node (the peer is
// reachable only then), watching netlink route and neighbour events in the
// node's namespace.
func measureJoins(b *testing.B, c kubernetes.Interface, node *testcluster.Node, from, joins int) []time.Duration {
	routes := make(chan netlink.RouteUpdate, 1024)
	neighs := make(chan netlink.NeighUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	h, err := netnsHandle(node.NS)
	if err != nil {
		b.Fatal(err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		b.Fatal(err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &h}); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for j := 0; j < joins; j++ {
		n := peerNode(from + j)
		_, cidr, _ := net.ParseCIDR(n.Spec.PodCIDR)
		vtep, mac := overlay.VTEPAddr(cidr), n.Annotations[kube.AnnotationVTEPMAC]
		underlay := net.ParseIP(n.Annotations[kube.AnnotationUnderlayIP])
		var haveRoute, haveNeigh, haveFDB bool
		t0 := time.Now()
		if _, err := c.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
		for !haveRoute || !haveNeigh || !haveFDB {
			select {
			case u := <-routes:
				if u.Type == unix.RTM_NEWROUTE && u.Dst != nil && u.Dst.String() == n.Spec.PodCIDR && u.Protocol == overlay.RouteProtocol {
					haveRoute = true
				}
			case u := <-neighs:
				if u.Type != unix.RTM_NEWNEIGH || u.HardwareAddr.String() != mac {
					continue
				}
				switch {
				case u.Family == unix.AF_BRIDGE && u.IP.Equal(underlay):
					haveFDB = true
				case u.Family == unix.AF_INET && u.IP.Equal(vtep):
					haveNeigh = true
				}
			case <-deadline:
				b.Fatalf("peer %s not programmed within 30 s: route %v, neighbour %v, FDB %v", n.Name, haveRoute, haveNeigh, haveFDB)
			}
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}
