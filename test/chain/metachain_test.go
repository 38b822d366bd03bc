// Package chain_test proves drover's ADD result is a valid prevResult for
// every reference meta plugin at once: tuning, firewall, portmap and
// bandwidth chained after drover, through libcni as a runtime calls them.
package chain_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/drover-net/drover/internal/cnirig"
	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/internal/testns"
)

func TestEveryMetaPluginChainsAfterDrover(t *testing.T) {
	testns.RequireRoot(t)
	ref := cnirig.RefPluginsDir()
	bin := t.TempDir()
	if err := cnirig.BuildDrover(filepath.Join(bin, "drover")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"tuning", "firewall", "portmap", "bandwidth"} {
		if _, err := os.Stat(filepath.Join(ref, p)); err != nil {
			t.Fatalf("reference plugin %s missing (%v): run %s", p, err, cnirig.SetupCommand)
		}
		if err := os.Symlink(filepath.Join(ref, p), filepath.Join(bin, p)); err != nil {
			t.Fatal(err)
		}
	}
	node, pod := testns.New(t), testns.New(t)
	state := t.TempDir()
	for _, version := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(version, func(t *testing.T) {
			_, list, err := cnirig.List("meta", version,
				cnirig.Drover("10.77.0.0/24", filepath.Join(state, "ipam"), filepath.Join(state, "node.json")),
				cnirig.Plugin{"type": "tuning", "sysctl": map[string]string{"net.ipv4.conf.eth0.arp_notify": "1"}, "mtu": 1400},
				cnirig.Plugin{"type": "firewall", "backend": "iptables"},
				cnirig.Portmap(),
				cnirig.Bandwidth(),
			)
			if err != nil {
				t.Fatal(err)
			}
			cni := libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(state, "cache"), nil)
			rt := &libcni.RuntimeConf{
				ContainerID: "meta-" + strings.ReplaceAll(version, ".", ""), NetNS: pod.Path(), IfName: "eth0",
				CapabilityArgs: map[string]any{
					"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}},
					"bandwidth":    map[string]any{"ingressRate": 100000000, "ingressBurst": 2147483647, "egressRate": 100000000, "egressBurst": 2147483647},
				},
			}
			ctx := context.Background()
			var res *current.Result
			err = node.Do(func(ns.NetNS) error {
				r, err := cni.AddNetworkList(ctx, list, rt)
				if err != nil {
					return fmt.Errorf("ADD: %w", err)
				}
				if res, err = current.NewResultFromResult(r); err != nil {
					return err
				}
				if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
					return fmt.Errorf("CHECK: %w", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// tuning acted on drover's interface in the pod.
			out, err := testcluster.Exec(pod, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify")
			if err != nil || strings.TrimSpace(out) != "1" {
				t.Fatalf("tuning's sysctl: %q %v", out, err)
			}
			if out, _ := testcluster.Exec(pod, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "mtu 1400") {
				t.Fatalf("tuning's mtu: %s", out)
			}
			// firewall admitted the pod's address in its own chain.
			ip := res.IPs[0].Address.IP.String()
			if out, _ := testcluster.Exec(node, "iptables", "-w", "-S", "CNI-FORWARD"); !strings.Contains(out, ip) {
				t.Fatalf("firewall has no rule for %s:\n%s", ip, out)
			}
			// portmap and bandwidth acted on the node.
			if out, _ := testcluster.Exec(node, "iptables", "-w", "-t", "nat", "-S"); !strings.Contains(out, "18080") {
				t.Fatalf("portmap has no rule for the host port:\n%s", out)
			}
			if out, _ := testcluster.Exec(node, "tc", "qdisc", "show"); !strings.Contains(out, "tbf") {
				t.Fatalf("bandwidth shaped nothing:\n%s", out)
			}

			if err := node.Do(func(ns.NetNS) error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if out, _ := testcluster.Exec(node, "iptables", "-w", "-S", "CNI-FORWARD"); strings.Contains(out, ip) {
				t.Fatalf("firewall rule for %s survived DEL:\n%s", ip, out)
			}
			if out, _ := testcluster.Exec(node, "iptables", "-w", "-t", "nat", "-S"); strings.Contains(out, "18080") {
				t.Fatalf("portmap rule survived DEL:\n%s", out)
			}
			if out, _ := exec.Command("ls", filepath.Join(state, "ipam", "meta")).Output(); strings.Contains(string(out), "10.77.") {
				t.Fatalf("allocation survived DEL: %s", out)
			}
		})
	}
}
