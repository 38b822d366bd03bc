// Package masq keeps drover's iptables rules: masquerade for pod traffic
// leaving the cluster CIDR, and FORWARD accepts for pod traffic. The rules
// live in chains drover owns (DROVER-POSTROUTING in nat, DROVER-FORWARD in
// filter), reached by one jump each from the built-in chains. It never
// flushes, reorders or edits a chain it does not own; in its own chains it
// reads, compares and rewrites only when they differ.
package masq

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Chain names.
const (
	NATChain     = "DROVER-POSTROUTING"
	ForwardChain = "DROVER-FORWARD"
)

// Rules manages drover's chains for one cluster CIDR.
type Rules struct {
	ipt         *iptables.IPTables
	clusterCIDR *net.IPNet
}

// New prepares rules for clusterCIDR, using the iptables of the caller's
// network namespace (iptables waits for the xtables lock).
func New(clusterCIDR *net.IPNet) (*Rules, error) {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	return &Rules{ipt: ipt, clusterCIDR: clusterCIDR}, nil
}

type jump struct{ table, from, to, comment string }

func (r *Rules) jumps() []jump {
	return []jump{
		{"nat", "POSTROUTING", NATChain, "drover: masquerade pod traffic leaving the cluster"},
		{"filter", "FORWARD", ForwardChain, "drover: accept pod traffic"},
	}
}

func (j jump) spec() []string {
	return []string{"-m", "comment", "--comment", j.comment, "-j", j.to}
}

// chainRules is the exact content of each owned chain, as rule specs.
func (r *Rules) chainRules() map[[2]string][][]string {
	cidr := r.clusterCIDR.String()
	masq := []string{"-s", cidr, "-j", "MASQUERADE"}
	if r.ipt.HasRandomFully() {
		// --random-fully: source ports chosen at random so concurrent
		// flows from many pods never collide on a node's port.
		masq = append(masq, "--random-fully")
	}
	return map[[2]string][][]string{
		{"nat", NATChain}: {
			{"-s", cidr, "-d", cidr, "-j", "RETURN"},
			{"-s", cidr, "-d", "224.0.0.0/4", "-j", "RETURN"},
			masq,
		},
		{"filter", ForwardChain}: {
			{"-s", cidr, "-j", "ACCEPT"},
			{"-d", cidr, "-j", "ACCEPT"},
		},
	}
}

// Ensure makes the chains and jumps right. It reports how many writes it
// made: zero when all was in place.
func (r *Rules) Ensure() (int, error) {
	writes := 0
	for key, want := range r.chainRules() {
		table, chain := key[0], key[1]
		exists, err := r.ipt.ChainExists(table, chain)
		if err != nil {
			return writes, fmt.Errorf("look for chain %s/%s: %w", table, chain, err)
		}
		if !exists {
			if err := r.ipt.NewChain(table, chain); err != nil {
				return writes, fmt.Errorf("create chain %s/%s: %w", table, chain, err)
			}
			writes++
		}
		have, err := r.ipt.List(table, chain)
		if err != nil {
			return writes, fmt.Errorf("list chain %s/%s: %w", table, chain, err)
		}
		if sameRules(have, chain, want) {
			continue
		}
		// Our chain, our order: rewrite it whole.
		if err := r.ipt.ClearChain(table, chain); err != nil {
			return writes, fmt.Errorf("clear chain %s/%s: %w", table, chain, err)
		}
		for _, spec := range want {
			if err := r.ipt.Append(table, chain, spec...); err != nil {
				return writes, fmt.Errorf("append to %s/%s %v: %w", table, chain, spec, err)
			}
			writes++
		}
	}
	for _, j := range r.jumps() {
		ok, err := r.ipt.Exists(j.table, j.from, j.spec()...)
		if err != nil {
			return writes, fmt.Errorf("look for jump %s/%s -> %s: %w", j.table, j.from, j.to, err)
		}
		if ok {
			continue
		}
		if err := r.ipt.Append(j.table, j.from, j.spec()...); err != nil {
			return writes, fmt.Errorf("add jump %s/%s -> %s: %w", j.table, j.from, j.to, err)
		}
		writes++
	}
	return writes, nil
}

// Remove deletes the jumps and drover's chains; for uninstall. It is
// idempotent: any of them may already be gone.
func (r *Rules) Remove() error {
	for _, j := range r.jumps() {
		// `iptables -C` fails outright when the jump's target chain does
		// not exist, and then no jump to it can exist either.
		exists, err := r.ipt.ChainExists(j.table, j.to)
		if err != nil {
			return fmt.Errorf("look for chain %s/%s: %w", j.table, j.to, err)
		}
		if !exists {
			continue
		}
		if err := r.ipt.DeleteIfExists(j.table, j.from, j.spec()...); err != nil {
			return fmt.Errorf("remove jump %s/%s -> %s: %w", j.table, j.from, j.to, err)
		}
	}
	for key := range r.chainRules() {
		exists, err := r.ipt.ChainExists(key[0], key[1])
		if err != nil {
			return fmt.Errorf("look for chain %s/%s: %w", key[0], key[1], err)
		}
		if exists {
			if err := r.ipt.ClearAndDeleteChain(key[0], key[1]); err != nil {
				return fmt.Errorf("delete chain %s/%s: %w", key[0], key[1], err)
			}
		}
	}
	return nil
}

// sameRules compares `iptables -S chain` output with wanted specs. iptables
// prints "-N chain" first and each rule as "-A chain <spec>", normalising
// addresses the way we write them.
func sameRules(have []string, chain string, want [][]string) bool {
	var rules []string
	for _, line := range have {
		if strings.HasPrefix(line, "-A "+chain+" ") {
			rules = append(rules, strings.TrimPrefix(line, "-A "+chain+" "))
		}
	}
	var wanted []string
	for _, spec := range want {
		wanted = append(wanted, strings.Join(spec, " "))
	}
	return slices.Equal(rules, wanted)
}
