package install_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/drover-net/drover/internal/kubeenv"
	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/kube"
	"github.com/drover-net/drover/pkg/masq"
	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

// nodeNS is the namespace that stands for the node's network: the API
// server runs in it too, so droverd reaches it on 127.0.0.1 while it
// removes drover's links and chains there.
var nodeNS ns.NetNS

func startAPIServer(t *testing.T) *kubeenv.Env {
	t.Helper()
	nodeNS = testns.New(t)
	return kubeenv.Start(t, kubeenv.Options{NetNS: nodeNS.Path(), Address: "127.0.0.1"})
}

func makeNode(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
		kube.AnnotationVTEPMAC: vxlan.MACForNode(name).String(), kube.AnnotationUnderlayIP: "192.168.60.2",
		kube.AnnotationPodCIDR: "10.244.1.0/24", "example.com/owner": "someone else",
	}}}
	if _, err := c.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// On the node: what drover put there, and what is not drover's.
var (
	nodeDroverFiles = []string{
		"/opt/cni/bin/drover",
		"/etc/cni/net.d/10-drover.conflist",
		pluginDir + "/drover~local/local",
		"/run/drover/node.json",
		"/run/drover/ipam/drover/10.244.1.7",
		"/var/log/drover/local.log",
	}
	nodeKeptFiles = []string{
		"/var/lib/drover/volumes/db.img",
		"/var/lib/drover/volumes/db.json",
		"/var/lib/drover/attachments/0a1b.json",
		"/opt/cni/bin/loopback",
		"/etc/cni/net.d/99-loopback.conf",
	}
)

// droverNetwork builds in the current namespace what droverd does on a
// node, beside a foreign link, route and chain.
func droverNetwork() error {
	// A veth: the dummy module may not be loaded on the test machine.
	ul := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth-ul"}, PeerName: "eth-ulp"}
	if err := netlink.LinkAdd(ul); err != nil {
		return err
	}
	for _, name := range []string{"eth-ul", "eth-ulp"} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	addr, _ := netlink.ParseAddr("192.168.60.2/24")
	if err := netlink.AddrAdd(ul, addr); err != nil {
		return err
	}
	_, vtep, _ := net.ParseCIDR("10.244.1.0/32")
	if _, err := vxlan.Ensure(vxlan.Config{Name: vxlan.DefaultName, VNI: 7, Port: vxlan.DefaultPort, LocalIP: net.ParseIP("192.168.60.2"),
		Underlay: ul.Attrs().Index, MTU: 1400, MAC: vxlan.MACForNode("node-a"), Addr: vtep}); err != nil {
		return err
	}
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "drover0"}}); err != nil {
		return err
	}
	_, peer, _ := net.ParseCIDR("10.244.2.0/24")
	if _, err := overlay.Sync(overlay.Config{Device: vxlan.DefaultName, Underlay: ul.Attrs().Index}, []overlay.Peer{{
		Name: "node-b", PodCIDR: peer, VTEPMAC: vxlan.MACForNode("node-b"), UnderlayIP: net.ParseIP("192.168.60.3"),
	}}); err != nil {
		return err
	}
	_, foreign, _ := net.ParseCIDR("172.31.0.0/16")
	if err := netlink.RouteAdd(&netlink.Route{Dst: foreign, Gw: net.ParseIP("192.168.60.1"), LinkIndex: ul.Attrs().Index}); err != nil {
		return err
	}
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	r, err := masq.New(cluster)
	if err != nil {
		return err
	}
	if _, err := r.Ensure(); err != nil {
		return err
	}
	ipt, err := iptables.New()
	if err != nil {
		return err
	}
	return ipt.NewChain("filter", "OTHER-FORWARD")
}

// networkLeft lists drover's pieces still in the current namespace, and
// the foreign ones that went.
func networkLeft() ([]string, error) {
	var left []string
	for _, name := range []string{vxlan.DefaultName, "drover0"} {
		if _, err := netlink.LinkByName(name); err == nil {
			left = append(left, "link "+name)
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		left = append(left, "route "+r.Dst.String())
	}
	ipt, err := iptables.New()
	if err != nil {
		return nil, err
	}
	for table, builtin := range map[string]string{"nat": "POSTROUTING", "filter": "FORWARD"} {
		chains, err := ipt.ListChains(table)
		if err != nil {
			return nil, err
		}
		rules, err := ipt.List(table, builtin)
		if err != nil {
			return nil, err
		}
		for _, s := range append(chains, rules...) {
			if strings.Contains(s, "DROVER") {
				left = append(left, table+" "+s)
			}
		}
	}
	if _, err := netlink.LinkByName("eth-ul"); err != nil {
		left = append(left, "LOST the underlay link")
	}
	if ok, _ := ipt.ChainExists("filter", "OTHER-FORWARD"); !ok {
		left = append(left, "LOST the foreign chain OTHER-FORWARD")
	}
	_, foreign, _ := net.ParseCIDR("172.31.0.0/16")
	if rs, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: foreign}, netlink.RT_FILTER_DST); len(rs) != 1 {
		left = append(left, "LOST the foreign route")
	}
	return left, nil
}

// testUninstall runs the built `droverd uninstall` in the node namespace
// with the droverd ServiceAccount's kubeconfig, twice.
func testUninstall(t *testing.T, env *kubeenv.Env) {
	host := t.TempDir()
	for _, p := range append(append([]string{}, nodeDroverFiles...), nodeKeptFiles...) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(host, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(host, p), []byte("data of "+p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proc := t.TempDir()
	fakeKubelet(t, proc, "--volume-plugin-dir="+pluginDir)
	if err := nodeNS.Do(func(ns.NetNS) error { return droverNetwork() }); err != nil {
		t.Fatalf("build drover's network in %s: %v", nodeNS.Path(), err)
	}
	kubeconfig, _ := env.ServiceAccountKubeconfig(t, namespace, "droverd")
	args := []string{"uninstall", "--host-root=" + host, "--proc-root=" + proc, "--node-name=node-a", "--kubeconfig=" + kubeconfig}
	for round := 1; round <= 2; round++ {
		out, err := droverdIn(t, nodeNS.Path(), args...)
		if err != nil {
			t.Fatalf("round %d (the second finds everything gone): %v\n%s", round, err, out)
		}
		if !strings.Contains(out, "kept: volume data under /var/lib/drover") {
			t.Errorf("round %d output %q does not say the volume data was kept", round, out)
		}
		var left []string
		if err := nodeNS.Do(func(ns.NetNS) error {
			left, err = networkLeft()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Errorf("round %d: %q", round, left)
		}
	}
	for _, p := range nodeDroverFiles {
		if _, err := os.Lstat(filepath.Join(host, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
	for _, d := range []string{"/run/drover", "/var/log/drover", pluginDir + "/drover~local"} {
		if _, err := os.Lstat(filepath.Join(host, d)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("directory %s is still there (%v)", d, err)
		}
	}
	for _, p := range nodeKeptFiles {
		if got, err := os.ReadFile(filepath.Join(host, p)); err != nil || string(got) != "data of "+p {
			t.Errorf("%s was touched: %q, %v", p, got, err)
		}
	}
	node, err := env.Client.CoreV1().Nodes().Get(context.Background(), "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Annotations) != 1 || node.Annotations["example.com/owner"] != "someone else" {
		t.Errorf("node annotations %v, want only example.com/owner", node.Annotations)
	}
}

// TestUninstallFindsStateWhereRunKeptIt runs the built `droverd uninstall`
// with droverd run's --state-file and --ipam-dir, set as flags and as the
// DROVER_ variables the ConfigMap gives both DaemonSets.
func TestUninstallFindsStateWhereRunKeptIt(t *testing.T) {
	drover := []string{
		"/srv/state/node.json",
		"/srv/state/peers.json",
		"/srv/state/.peers.json.tmp-7",
		"/srv/ipam/drover/lock",
		"/srv/ipam/drover/10.244.1.7",
		"/run/drover/leftover",
	}
	kept := []string{
		"/srv/state/unrelated.conf",
		"/srv/ipam/other-net/10.9.0.2",
		"/var/lib/drover/volumes/db.img",
	}
	tests := []struct {
		name string
		env  []string
		args []string
	}{
		{"set in the environment", []string{"DROVER_STATE_FILE=/srv/state/node.json", "DROVER_IPAM_DIR=/srv/ipam"}, nil},
		{"set as flags", nil, []string{"--state-file=/srv/state/node.json", "--ipam-dir=/srv/ipam"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := t.TempDir()
			for _, p := range append(append([]string{}, drover...), kept...) {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(host, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(host, p), []byte("data of "+p), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			node := testns.New(t)
			args := append([]string{"uninstall", "--host-root=" + host, "--plugin-dir=" + pluginDir}, tt.args...)
			for round := 1; round <= 2; round++ {
				if out, err := droverdEnv(t, node.Path(), tt.env, args...); err != nil {
					t.Fatalf("round %d (the second finds everything gone): %v\n%s", round, err, out)
				}
			}
			for _, p := range append(append([]string{}, drover...), "/srv/ipam/drover", "/run/drover") {
				if _, err := os.Lstat(filepath.Join(host, p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s is still there (%v)", p, err)
				}
			}
			for _, p := range kept {
				if got, err := os.ReadFile(filepath.Join(host, p)); err != nil || string(got) != "data of "+p {
					t.Errorf("%s was touched: %q, %v", p, got, err)
				}
			}
		})
	}
}
