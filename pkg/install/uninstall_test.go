package install

import (
	"context"
	"errors"
	"fmt"
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
	"k8s.io/client-go/kubernetes/fake"

	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/kube"
	"github.com/drover-net/drover/pkg/masq"
	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

// hostFiles is what an installed drover node holds on disk (host paths),
// and what must survive uninstall.
var (
	droverFiles = []string{
		"/opt/cni/bin/drover",
		"/opt/cni/bin/.drover.tmp-123",
		"/etc/cni/net.d/10-drover.conflist",
		"/var/lib/kubelet/volumeplugins/drover~local/local",
		"/var/lib/kubelet/volumeplugins/drover~local/drover-local.json",
		"/run/drover/node.json",
		"/run/drover/peers.json",
		"/run/drover/.node.json.tmp-123",
		"/run/drover/ipam/drover/10.244.1.5",
		"/var/log/drover/local.log",
	}
	keptFiles = []string{
		"/var/lib/drover/volumes/pgdata.img",
		"/var/lib/drover/volumes/pgdata.json",
		"/var/lib/drover/attachments/abc.json",
		"/opt/cni/bin/portmap",
		"/etc/cni/net.d/20-other.conflist",
		"/var/lib/kubelet/volumeplugins/other~driver/driver",
	}
	// keptDirs stay even when drover emptied them: they are the host's.
	keptDirs = []string{"/opt/cni/bin", "/etc/cni/net.d", "/var/lib/kubelet/volumeplugins"}
)

// makeNetwork gives the current namespace what droverd builds on a node,
// plus a foreign link, route and chain that uninstall must leave alone. It
// runs inside ns.Do, off the test's goroutine, so it returns errors rather
// than failing the test.
func makeNetwork() error {
	var errs []error
	must := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	// A veth: the dummy module may not be loaded on the test machine.
	ul := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "underlay0"}, PeerName: "underlay0p"}
	if err := netlink.LinkAdd(ul); err != nil {
		return fmt.Errorf("add underlay: %w", err)
	}
	must("underlay up", netlink.LinkSetUp(ul))
	if peer, err := netlink.LinkByName("underlay0p"); err == nil {
		must("underlay peer up", netlink.LinkSetUp(peer))
	}
	addr, _ := netlink.ParseAddr("192.168.50.2/24")
	must("underlay address", netlink.AddrAdd(ul, addr))
	_, vtep, _ := net.ParseCIDR("10.244.1.0/32")
	_, err := vxlan.Ensure(vxlan.Config{Name: vxlan.DefaultName, VNI: 1, Port: vxlan.DefaultPort,
		LocalIP: net.ParseIP("192.168.50.2"), Underlay: ul.Attrs().Index, MTU: 1400,
		MAC: vxlan.MACForNode("node-a"), Addr: vtep})
	must("vxlan", err)
	must("bridge", netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "drover0"}}))
	_, peer, _ := net.ParseCIDR("10.244.2.0/24")
	_, err = overlay.Sync(overlay.Config{Device: vxlan.DefaultName, Underlay: ul.Attrs().Index}, []overlay.Peer{{
		Name: "node-b", PodCIDR: peer, VTEPMAC: vxlan.MACForNode("node-b"), UnderlayIP: net.ParseIP("192.168.50.3"),
	}})
	must("overlay peer", err)
	// A direct route sits on the underlay, so deleting the VXLAN device
	// alone would leave it.
	_, direct, _ := net.ParseCIDR("10.244.3.0/24")
	must("direct route", netlink.RouteAdd(&netlink.Route{Dst: direct, Gw: net.ParseIP("192.168.50.4"), LinkIndex: ul.Attrs().Index, Protocol: overlay.RouteProtocol}))
	_, foreign, _ := net.ParseCIDR("172.30.0.0/16")
	must("foreign route", netlink.RouteAdd(&netlink.Route{Dst: foreign, Gw: net.ParseIP("192.168.50.1"), LinkIndex: ul.Attrs().Index}))
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	r, err := masq.New(cluster)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	_, err = r.Ensure()
	must("masq chains", err)
	ipt, err := iptables.New()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	must("foreign chain", ipt.NewChain("nat", "KUBE-POSTROUTING"))
	must("foreign jump", ipt.Append("nat", "POSTROUTING", "-j", "KUBE-POSTROUTING"))
	return errors.Join(errs...)
}

// droverNetworkLeft lists what of drover's is still in the namespace and,
// with foreign, fails when something makeNetwork made that is not drover's
// went missing.
func droverNetworkLeft(t *testing.T, foreign bool) []string {
	t.Helper()
	var left []string
	for _, name := range []string{vxlan.DefaultName, "drover0"} {
		if _, err := netlink.LinkByName(name); err == nil {
			left = append(left, "link "+name)
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: overlay.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Error(err)
	}
	for _, r := range routes {
		left = append(left, "route "+r.Dst.String())
	}
	ipt, err := iptables.New()
	if err != nil {
		t.Error(err)
		return append(left, "iptables unusable")
	}
	for _, table := range []string{"nat", "filter"} {
		out, err := ipt.ListChains(table)
		if err != nil {
			t.Error(err)
		}
		rules, _ := ipt.List(table, map[string]string{"nat": "POSTROUTING", "filter": "FORWARD"}[table])
		for _, s := range append(out, rules...) {
			if strings.Contains(s, "DROVER") {
				left = append(left, table+": "+s)
			}
		}
	}
	if !foreign {
		return left
	}
	if _, err := netlink.LinkByName("underlay0"); err != nil {
		t.Errorf("the underlay link went: %v", err)
	}
	_, foreignNet, _ := net.ParseCIDR("172.30.0.0/16")
	if rs, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: foreignNet}, netlink.RT_FILTER_DST); len(rs) != 1 {
		t.Errorf("the foreign route went")
	}
	if ok, _ := ipt.Exists("nat", "POSTROUTING", "-j", "KUBE-POSTROUTING"); !ok {
		t.Errorf("the foreign jump KUBE-POSTROUTING went")
	}
	return left
}

func makeHost(t *testing.T, host string) {
	t.Helper()
	for _, p := range append(append([]string{}, droverFiles...), keptFiles...) {
		writeFile(t, filepath.Join(host, p), "content of "+p)
	}
}

func TestUninstallRemovesDroverAndKeepsVolumeData(t *testing.T) {
	n := testns.New(t)
	host := t.TempDir()
	makeHost(t, host)
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Annotations: map[string]string{
		kube.AnnotationVTEPMAC: "aa:bb:cc:dd:ee:ff", kube.AnnotationUnderlayIP: "192.168.50.2",
		kube.AnnotationPodCIDR: "10.244.1.0/24", "other.io/keep": "yes",
	}}})
	opts := UninstallOptions{
		Options:  Options{HostRoot: host, PluginDir: "/var/lib/kubelet/volumeplugins"},
		Kube:     client,
		NodeName: "node-a",
	}
	for round := 1; round <= 2; round++ {
		err := n.Do(func(ns.NetNS) error {
			if round == 1 {
				if err := makeNetwork(); err != nil {
					return fmt.Errorf("set up drover's network: %w", err)
				}
				if left := droverNetworkLeft(t, true); len(left) < 7 {
					return fmt.Errorf("setup made too little to test with: %q", left)
				}
			}
			steps, err := Uninstall(context.Background(), opts)
			if err != nil {
				return err
			}
			if len(steps) != 10 {
				t.Errorf("round %d ran %d steps, want 10: %+v", round, len(steps), steps)
			}
			if left := droverNetworkLeft(t, true); len(left) > 0 {
				t.Errorf("round %d left %q", round, left)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("uninstall round %d (the second finds everything gone): %v", round, err)
		}
	}
	for _, p := range droverFiles {
		if _, err := os.Lstat(filepath.Join(host, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
	for _, d := range []string{"/run/drover", "/var/log/drover", "/var/lib/kubelet/volumeplugins/drover~local"} {
		if _, err := os.Lstat(filepath.Join(host, d)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("directory %s is still there (%v)", d, err)
		}
	}
	for _, p := range keptFiles {
		got, err := os.ReadFile(filepath.Join(host, p))
		if err != nil || string(got) != "content of "+p {
			t.Errorf("%s was touched: %q, %v", p, got, err)
		}
	}
	for _, d := range keptDirs {
		if _, err := os.Stat(filepath.Join(host, d)); err != nil {
			t.Errorf("host directory %s went: %v", d, err)
		}
	}
	node, err := client.CoreV1().Nodes().Get(context.Background(), "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"other.io/keep": "yes"}; len(node.Annotations) != 1 || node.Annotations["other.io/keep"] != "yes" {
		t.Errorf("node annotations %v, want %v", node.Annotations, want)
	}
}

func TestUninstallRefusesPathsHoldingVolumeData(t *testing.T) {
	tests := []struct {
		name string
		opts UninstallOptions
	}{
		{"a run dir inside the volume data", UninstallOptions{RunDir: "/var/lib/drover/volumes"}},
		{"a log dir that is the volume data", UninstallOptions{LogDir: "/var/lib/drover/"}},
		{"a conf dir above the volume data", UninstallOptions{CNIConfDir: "/var/lib"}},
		{"the root", UninstallOptions{RunDir: "/"}},
		{"a run dir that is the machine's /run", UninstallOptions{RunDir: "/run"}},
		{"a log dir that is the machine's /var/log", UninstallOptions{LogDir: "/var/log/"}},
		{"a relative path", UninstallOptions{LogDir: "var/log/drover"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := t.TempDir()
			makeHost(t, host)
			tt.opts.HostRoot = host
			tt.opts.PluginDir = "/var/lib/kubelet/volumeplugins"
			// In a namespace of its own: were the refusal broken, the
			// machine's network must not pay for it.
			var steps []Step
			var err error
			_ = testns.New(t).Do(func(ns.NetNS) error {
				steps, err = Uninstall(context.Background(), tt.opts)
				return nil
			})
			if err == nil || len(steps) != 0 {
				t.Fatalf("Uninstall = %d steps, %v; want a refusal before any step", len(steps), err)
			}
			for _, p := range append(append([]string{}, droverFiles...), keptFiles...) {
				if _, err := os.Stat(filepath.Join(host, p)); err != nil {
					t.Errorf("%s went although uninstall refused: %v", p, err)
				}
			}
		})
	}
}

func TestUninstallPartialLeftovers(t *testing.T) {
	tests := []struct {
		name  string
		setup func(ipt *iptables.IPTables) error
	}{
		{
			name:  "a lone NAT chain with its jump goes (the FORWARD chain already gone)",
			setup: func(ipt *iptables.IPTables) error { return loneChain(ipt, "nat", "POSTROUTING", masq.NATChain) },
		},
		{
			name:  "a lone FORWARD chain with its jump goes (the NAT chain already gone)",
			setup: func(ipt *iptables.IPTables) error { return loneChain(ipt, "filter", "FORWARD", masq.ForwardChain) },
		},
		{
			name:  "a node without any drover chain is fine",
			setup: func(*iptables.IPTables) error { return nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := UninstallOptions{Options: Options{HostRoot: t.TempDir(), PluginDir: "/var/lib/kubelet/volumeplugins"}}
			err := testns.New(t).Do(func(ns.NetNS) error {
				ipt, err := iptables.New()
				if err != nil {
					return err
				}
				if err := tt.setup(ipt); err != nil {
					return fmt.Errorf("setup: %w", err)
				}
				if _, err := Uninstall(context.Background(), opts); err != nil {
					return err
				}
				if left := droverNetworkLeft(t, false); len(left) > 0 {
					return fmt.Errorf("left %q", left)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// loneChain makes one of drover's chains and a jump to it, the way masq
// writes it, without the other chain.
func loneChain(ipt *iptables.IPTables, table, from, chain string) error {
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	r, err := masq.New(cluster)
	if err != nil {
		return err
	}
	if _, err := r.Ensure(); err != nil {
		return err
	}
	other := map[string][2]string{"nat": {"filter", masq.ForwardChain}, "filter": {"nat", masq.NATChain}}[table]
	rules, err := ipt.List(other[0], map[string]string{"nat": "POSTROUTING", "filter": "FORWARD"}[other[0]])
	if err != nil {
		return err
	}
	// Drop the other chain's jump by its rule number, then the chain.
	for i, rule := range rules[1:] {
		if strings.Contains(rule, "-j "+other[1]) {
			if err := ipt.DeleteById(other[0], map[string]string{"nat": "POSTROUTING", "filter": "FORWARD"}[other[0]], i+1); err != nil {
				return err
			}
			break
		}
	}
	return ipt.ClearAndDeleteChain(other[0], other[1])
}

func TestUninstallGoesOnWhenThePluginDirCannotBeFound(t *testing.T) {
	host, proc := t.TempDir(), t.TempDir()
	makeHost(t, host)
	// A kubelet whose config file is missing: detection fails.
	writeFile(t, filepath.Join(proc, "77", "cmdline"), "kubelet\x00--config=/missing.yaml\x00")
	opts := UninstallOptions{Options: Options{HostRoot: host, ProcRoot: proc}}
	var steps []Step
	var err error
	_ = testns.New(t).Do(func(ns.NetNS) error {
		steps, err = Uninstall(context.Background(), opts)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "--plugin-dir") {
		t.Fatalf("Uninstall error = %v, want one asking for --plugin-dir", err)
	}
	if len(steps) != 9 {
		t.Errorf("%d steps ran, want all 9 without a Kubernetes client", len(steps))
	}
	for _, p := range []string{"/opt/cni/bin/drover", "/etc/cni/net.d/10-drover.conflist", "/run/drover/node.json"} {
		if _, err := os.Stat(filepath.Join(host, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
}
