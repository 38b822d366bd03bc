package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// The configurations measured, by the name the report gives them.
const (
	nameFloor         = "floor: loopback alone"
	nameRef           = "reference: bridge + host-local"
	nameRefPortmap    = "reference: bridge + host-local + portmap"
	nameRefNoMasq     = "reference without masquerade (ipMasq false)"
	nameDrover        = "drover"
	nameDroverPortmap = "drover + portmap"
)

// result is one configuration's measurements.
type result struct {
	add, del                 []time.Duration
	parallelAdd, parallelDel []time.Duration // wall time of each round
}

type report struct {
	// 1-minute load averages when the measurements began and ended: the
	// machine is shared, and this says how quiet it was.
	loadStart, loadEnd string
	pods               int
	at                 time.Time
	cpus               int
	results            map[string]result
	vethDel            []time.Duration // kernel: one veth pair deleted over netlink
}

// percentile is the nearest-rank percentile: at 110 samples p99 is the
// second-largest.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}

// loadAverage is the 1-minute load average.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Fields(string(data))[0]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// msList renders samples as milliseconds, in the order taken.
func msList(ds []time.Duration) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)))
	}
	return strings.Join(parts, " ")
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// target renders one ratio against its goal.
func target(r, goal float64) string {
	return fmt.Sprintf("%.2f× | ≤ %.2g× | %s", r, goal, verdict(r, goal))
}

// verdict says whether ratio r meets an at-most goal.
func verdict(r, goal float64) string {
	if r > goal {
		return "**missed**"
	}
	return "met"
}

func (r *report) markdown(command string) string {
	var b strings.Builder
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, "## CNI plugin\n\n")
	fmt.Fprintf(&b, "Command: `%s` (as root; `make bench` runs it).\n\n", command)
	b.WriteString(`Each configuration is one conflist (cniVersion 1.1.0) on its own node
network namespace, run by libcni in-process from a thread in that
namespace, as containerd and CRI-O call plugins; pod namespaces are made
before any timing. Latency is one call's wall time, the exec of every
plugin in the chain included. The configurations take turns pod by pod,
so load from elsewhere on the machine (it is shared; see the load
averages) hits them alike: compare ratios, not absolute times. p99 is
nearest-rank. One warm-up ADD and DEL per configuration precede the
samples. No port mappings are requested; portmap still execs iptables to
choose its backend on every call, which is most of its cost, the same in
both chains. The targets are the project's; "floor" is one plugin exec
doing nothing, the least any CNI plugin can cost here.

The reference is configured to give its pods what drover's get: a gateway
on the bridge, hairpin, and masquerade for traffic leaving the cluster
(` + "`isGateway`, `hairpinMode`, `ipMasq`" + `). drover's masquerade is one rule per
node that droverd keeps; the bridge plugin makes a chain per pod on ADD and
removes it on DEL, which is most of its cost. The same reference without
masquerade is measured too, for comparison. Every configuration keeps its
state (IPAM store, libcni's result cache) on one tmpfs, as drover's default
store under /run is on a node.

`)
	fmt.Fprintf(&b, "Measured %s on %s (kernel %s, %d CPUs; load average %s at the start, %s at the end), %d pods per configuration.\n\n",
		r.at.Format("2006-01-02 15:04 MST"), host, strings.TrimSpace(string(kernel)), r.cpus, r.loadStart, r.loadEnd, r.pods)

	b.WriteString("| configuration | ADD p50 | ADD p99 | DEL p50 | DEL p99 |\n|---|---|---|---|---|\n")
	for _, name := range []string{nameFloor, nameRef, nameRefPortmap, nameRefNoMasq, nameDrover, nameDroverPortmap} {
		res := r.results[name]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", name,
			ms(percentile(res.add, 50)), ms(percentile(res.add, 99)),
			ms(percentile(res.del, 50)), ms(percentile(res.del, 99)))
	}

	p50 := func(name string, del bool) time.Duration {
		if del {
			return percentile(r.results[name].del, 50)
		}
		return percentile(r.results[name].add, 50)
	}
	b.WriteString("\n| ratio of p50s | value | target | |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| drover ADD / reference ADD | %s |\n", target(ratio(p50(nameDrover, false), p50(nameRef, false)), 0.2))
	fmt.Fprintf(&b, "| drover ADD / floor ADD | %s |\n", target(ratio(p50(nameDrover, false), p50(nameFloor, false)), 2))
	fmt.Fprintf(&b, "| drover DEL / reference DEL | %s |\n", target(ratio(p50(nameDrover, true), p50(nameRef, true)), 0.1))
	info := func(what string, x, y time.Duration) {
		fmt.Fprintf(&b, "| %s | %.2f× | | |\n", what, ratio(x, y))
	}
	info("drover + portmap ADD / reference + portmap ADD", p50(nameDroverPortmap, false), p50(nameRefPortmap, false))
	info("drover + portmap DEL / reference + portmap DEL", p50(nameDroverPortmap, true), p50(nameRefPortmap, true))
	info("drover ADD / reference without masquerade ADD", p50(nameDrover, false), p50(nameRefNoMasq, false))
	info("drover DEL / reference without masquerade DEL", p50(nameDrover, true), p50(nameRefNoMasq, true))
	info("drover DEL / floor DEL", p50(nameDrover, true), p50(nameFloor, true))
	info("floor ADD / reference ADD: the least any exec'd plugin reaches", p50(nameFloor, false), p50(nameRef, false))
	info("floor DEL / reference DEL: the least any exec'd plugin reaches", p50(nameFloor, true), p50(nameRef, true))
	vethDel := percentile(r.vethDel, 50)
	info("kernel's veth deletion alone / reference DEL", vethDel, p50(nameRef, true))
	fmt.Fprintf(&b, "\nKernel share of a DEL: deleting one veth pair over netlink, no exec, pairs made like drover's and deleted once per pod between the configurations' DELs: p50 %s, p99 %s over %d. "+
		"Every plugin whose DEL removes the pod's veth before it returns, the reference's too, waits for this (the kernel's unregistration waits for RCU grace periods). "+
		"It alone is %.2f× the reference DEL, so a DEL of ≤ 0.1× the reference is out of reach on this kernel; drover's whole DEL, exec included, is %s.\n",
		ms(vethDel), ms(percentile(r.vethDel, 99)), len(r.vethDel), ratio(vethDel, p50(nameRef, true)), ms(p50(nameDrover, true)))

	d, ref := r.results[nameDrover], r.results[nameRef]
	med := func(ds []time.Duration) time.Duration { return percentile(ds, 50) }
	fmt.Fprintf(&b, "\n%d pods at once (every call released together; wall time until the last returns), median of %d rounds taken in turns:\n\n", r.pods, len(d.parallelAdd))
	b.WriteString("| configuration | parallel ADDs | parallel DELs | rounds (ADD / DEL) |\n|---|---|---|---|\n")
	for _, c := range []struct {
		name string
		res  result
	}{{nameRef, ref}, {nameDrover, d}} {
		fmt.Fprintf(&b, "| %s | %s | %s | %s / %s |\n", c.name, ms(med(c.res.parallelAdd)), ms(med(c.res.parallelDel)), msList(c.res.parallelAdd), msList(c.res.parallelDel))
	}
	addRatio, delRatio := ratio(med(d.parallelAdd), med(ref.parallelAdd)), ratio(med(d.parallelDel), med(ref.parallelDel))
	fmt.Fprintf(&b, "| drover / reference | %.2f× | %.2f× | |\n", addRatio, delRatio)
	fmt.Fprintf(&b, "| target ≤ 0.2× | %s | %s | |\n", verdict(addRatio, 0.2), verdict(delRatio, 0.2))
	return b.String()
}

// writeSection replaces the "## CNI plugin" section of a Markdown file (up to
// the next "## " heading) with section, leaving every other section as it
// is; it appends the section when missing and creates the file when absent.
func writeSection(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	doc := string(old)
	if doc == "" {
		doc = "# drover benchmarks\n"
	}
	lines := strings.SplitAfter(doc, "\n")
	start, end := -1, len(lines)
	for i, l := range lines {
		if strings.TrimRight(l, "\n") == "## CNI plugin" {
			start = i
			continue
		}
		if start >= 0 && i > start && strings.HasPrefix(l, "## ") {
			end = i
			break
		}
	}
	section = strings.TrimRight(section, "\n") + "\n"
	var out string
	if start < 0 {
		out = strings.TrimRight(doc, "\n") + "\n\n" + section
	} else {
		out = strings.Join(lines[:start], "") + section
		if end < len(lines) {
			out += "\n" + strings.Join(lines[end:], "")
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(out), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
