package masq_test

import (
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/masq"
)

func iptablesS(t *testing.T, n ns.NetNS, table string) []string {
	t.Helper()
	var out []byte
	err := n.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command("iptables", "-w", "-t", table, "-S").CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("iptables -S: %v %s", err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func run(t *testing.T, n ns.NetNS, args ...string) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
		if err != nil {
			t.Logf("%s", out)
		}
		return err
	})
	if err != nil {
		t.Fatalf("iptables %v: %v", args, err)
	}
}

func ensure(t *testing.T, n ns.NetNS, cidr string) int {
	t.Helper()
	_, c, _ := net.ParseCIDR(cidr)
	var writes int
	err := n.Do(func(ns.NetNS) error {
		r, err := masq.New(c)
		if err != nil {
			return err
		}
		writes, err = r.Ensure()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return writes
}

func TestEnsureOwnsItsChainsAndLeavesOthersAlone(t *testing.T) {
	node := testns.New(t)
	// Someone else's rules, before and after ours.
	run(t, node, "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "MASQUERADE")
	run(t, node, "-t", "filter", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP")

	if w := ensure(t, node, "10.244.0.0/16"); w == 0 {
		t.Fatal("first Ensure wrote nothing")
	}
	nat := iptablesS(t, node, "nat")
	for _, want := range []string{
		"-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE",
		"-A DROVER-POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN",
		"-A DROVER-POSTROUTING -s 10.244.0.0/16 -j MASQUERADE --random-fully",
	} {
		if !slices.Contains(nat, want) {
			t.Errorf("nat table lacks %q:\n%s", want, strings.Join(nat, "\n"))
		}
	}
	if i, j := slices.Index(nat, "-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE"), slices.IndexFunc(nat, func(s string) bool { return strings.Contains(s, "-j DROVER-POSTROUTING") }); i < 0 || j < i {
		t.Errorf("the foreign rule was moved or our jump went before it:\n%s", strings.Join(nat, "\n"))
	}
	filter := iptablesS(t, node, "filter")
	if !slices.Contains(filter, "-A FORWARD -s 192.0.2.0/24 -j DROP") || !slices.Contains(filter, "-A DROVER-FORWARD -s 10.244.0.0/16 -j ACCEPT") {
		t.Errorf("filter table:\n%s", strings.Join(filter, "\n"))
	}

	if w := ensure(t, node, "10.244.0.0/16"); w != 0 {
		t.Fatalf("a second Ensure made %d writes, want 0", w)
	}

	// Hand-tampering is repaired.
	run(t, node, "-t", "nat", "-D", "DROVER-POSTROUTING", "-s", "10.244.0.0/16", "-j", "MASQUERADE", "--random-fully")
	run(t, node, "-t", "filter", "-D", "FORWARD", "-m", "comment", "--comment", "drover: accept pod traffic", "-j", "DROVER-FORWARD")
	if w := ensure(t, node, "10.244.0.0/16"); w == 0 {
		t.Fatal("Ensure did not repair deleted rules")
	}
	if w := ensure(t, node, "10.244.0.0/16"); w != 0 {
		t.Fatalf("after repair a further Ensure wrote %d", w)
	}

	// Remove leaves only the foreign rules.
	err := node.Do(func(ns.NetNS) error {
		_, c, _ := net.ParseCIDR("10.244.0.0/16")
		r, err := masq.New(c)
		if err != nil {
			return err
		}
		return r.Remove()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"nat", "filter"} {
		for _, line := range iptablesS(t, node, table) {
			if strings.Contains(line, "DROVER") {
				t.Errorf("after Remove %s still has %q", table, line)
			}
		}
	}
	if !slices.Contains(iptablesS(t, node, "nat"), "-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE") {
		t.Error("Remove took a foreign rule")
	}
}

func TestRemoveIsIdempotent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup []string // iptables commands before Remove
	}{
		{"Remove on a node without drover's chains", nil},
		{"Remove with only the nat chain and its jump left", []string{
			"-t nat -N DROVER-POSTROUTING",
			"-t nat -A POSTROUTING -m comment --comment drover:_masquerade_pod_traffic_leaving_the_cluster -j DROVER-POSTROUTING",
		}},
		{"Remove with only an empty filter chain left", []string{"-t filter -N DROVER-FORWARD"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := testns.New(t)
			for _, c := range tc.setup {
				args := strings.Fields(c)
				for i := range args {
					args[i] = strings.ReplaceAll(args[i], "_", " ")
				}
				run(t, node, args...)
			}
			_, c, _ := net.ParseCIDR("10.244.0.0/16")
			for i := 0; i < 2; i++ {
				err := node.Do(func(ns.NetNS) error {
					r, err := masq.New(c)
					if err != nil {
						return err
					}
					return r.Remove()
				})
				if err != nil {
					t.Fatalf("Remove #%d: %v", i+1, err)
				}
			}
			for _, table := range []string{"nat", "filter"} {
				for _, line := range iptablesS(t, node, table) {
					if strings.Contains(line, "DROVER") {
						t.Fatalf("%s still has %q", table, line)
					}
				}
			}
		})
	}
}
