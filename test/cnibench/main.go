// Command cnibench measures the drover CNI plugin against the reference
// bridge + host-local plugins and a no-op floor (the reference loopback
// plugin alone), through libcni in-process as a container runtime calls
// them: ADD and DEL latency per pod (p50, p99) and the wall time of a node's
// worth of parallel ADDs and DELs. It prints a Markdown report and, with
// -write, puts it in the "## CNI plugin" section of docs/benchmarks.md.
//
// Every plugin runs inside a "node" network namespace the benchmark makes;
// pods are further namespaces made before any timing starts. All of them are
// removed on exit, on failure and on SIGINT/SIGTERM. It is a benchmark, not
// a test: scripts/bench-cni.sh runs it as root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/drover-net/drover/internal/cnirig"
)

func main() {
	pods := flag.Int("pods", 110, "pods per configuration (latency samples and parallel calls); at least 100")
	rounds := flag.Int("parallel-rounds", 5, "rounds of parallel ADDs and DELs per configuration; the median is reported")
	write := flag.String("write", "", "Markdown file whose \"## CNI plugin\" section receives the report")
	command := flag.String("command", "bash scripts/bench-cni.sh", "the command the report names as reproducing it")
	flag.Parse()
	if *pods < 100 {
		fmt.Fprintln(os.Stderr, "cnibench: -pods must be at least 100 for a p99")
		os.Exit(2)
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "cnibench: -parallel-rounds must be at least 1")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "cnibench: creates network namespaces: run as root")
		os.Exit(1)
	}
	b := &bench{pods: *pods, parallelRounds: *rounds}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		if !b.finished() {
			// Interrupted: remove what was made, then leave.
			b.cleanup()
			fmt.Fprintln(os.Stderr, "cnibench: interrupted; namespaces removed")
			os.Exit(130)
		}
	}()
	rep, err := b.run()
	b.cleanup()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		os.Exit(1)
	}
	md := rep.markdown(*command)
	fmt.Print(md)
	if *write != "" {
		if err := writeSection(*write, md); err != nil {
			fmt.Fprintln(os.Stderr, "cnibench:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "cnibench: wrote the CNI plugin section of %s\n", *write)
	}
}

// setup is one conflist on its own node.
type setup struct {
	name     string
	parallel bool // also measured with every pod at once
	node     ns.NetNS
	pods     []ns.NetNS
	cni      *libcni.CNIConfig
	list     *libcni.NetworkConfigList
	result   result
}

type bench struct {
	pods           int
	parallelRounds int
	tmp            string

	mu      sync.Mutex
	made    []ns.NetNS // every namespace, for cleanup
	done    bool
	cleaned bool
	// storesOnTmpfs: stores() is a mount to detach on cleanup.
	storesOnTmpfs bool
}

func (b *bench) finished() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done
}

func (b *bench) newNS() (ns.NetNS, error) {
	n, err := testutils.NewNS()
	if err != nil {
		return nil, fmt.Errorf("create network namespace: %w", err)
	}
	b.mu.Lock()
	b.made = append(b.made, n)
	b.mu.Unlock()
	return n, nil
}

// cleanup removes every namespace and the temporary directory; links inside
// the namespaces go with them.
func (b *bench) cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cleaned {
		return
	}
	b.cleaned, b.done = true, true
	for _, n := range b.made {
		_ = n.Close()
		// Detach: a plugin exec'd from another goroutine may hold a copy
		// of the namespace's descriptor between fork and exec.
		_ = syscall.Unmount(n.Path(), syscall.MNT_DETACH)
		_ = os.Remove(n.Path())
	}
	if b.tmp != "" {
		if b.storesOnTmpfs {
			_ = syscall.Unmount(b.stores(), syscall.MNT_DETACH)
		}
		_ = os.RemoveAll(b.tmp)
	}
}

// stores is where every configuration keeps its state: IPAM stores (drover's
// and host-local's) and libcni's result cache.
func (b *bench) stores() string { return filepath.Join(b.tmp, "stores") }

// mountStores puts every configuration's state on one tmpfs, as on a node:
// drover's default store is under /run, which is tmpfs wherever systemd
// runs, and a disk's journal would otherwise weigh on each plugin's file
// writes by however busy the machine's disk is. Both plugins get the same.
func (b *bench) mountStores() error {
	if err := os.MkdirAll(b.stores(), 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if err := syscall.Mount("tmpfs", b.stores(), "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=64m,mode=0700"); err != nil {
		return fmt.Errorf("mount a tmpfs for the plugins' state: %w", err)
	}
	b.mu.Lock()
	b.storesOnTmpfs = true
	b.mu.Unlock()
	return nil
}

func (b *bench) run() (*report, error) {
	refDir := cnirig.RefPluginsDir()
	if err := cnirig.CheckRefPlugins(refDir); err != nil {
		return nil, err
	}
	var err error
	if b.tmp, err = os.MkdirTemp("", "drover-cnibench-"); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if err := b.mountStores(); err != nil {
		return nil, err
	}
	droverBin := filepath.Join(b.tmp, "build", "drover")
	if err := cnirig.BuildDrover(droverBin); err != nil {
		return nil, err
	}
	binDir := filepath.Join(b.tmp, "bin")
	if err := cnirig.ComposePath(binDir, droverBin, refDir); err != nil {
		return nil, err
	}

	const cidr = "10.88.0.0/16" // room for every pod, on every node alike
	mk := func(idx int, name string, parallel bool, plugins ...func(dir string) cnirig.Plugin) (*setup, error) {
		dir := filepath.Join(b.stores(), fmt.Sprintf("setup-%d", idx))
		var ps []cnirig.Plugin
		for _, p := range plugins {
			ps = append(ps, p(dir))
		}
		_, list, err := cnirig.List("bench", "1.1.0", ps...)
		if err != nil {
			return nil, err
		}
		exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
		s := &setup{name: name, parallel: parallel, list: list,
			cni: libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"), exec)}
		if s.node, err = b.newNS(); err != nil {
			return nil, err
		}
		for i := 0; i < b.pods; i++ {
			p, err := b.newNS()
			if err != nil {
				return nil, err
			}
			s.pods = append(s.pods, p)
		}
		return s, nil
	}
	drover := func(dir string) cnirig.Plugin {
		return cnirig.Drover(cidr, filepath.Join(dir, "ipam"), filepath.Join(dir, "node.json"))
	}
	bridge := func(dir string) cnirig.Plugin {
		return cnirig.RefBridge("cni0", cidr, filepath.Join(dir, "host-local"), true)
	}
	bridgeNoMasq := func(dir string) cnirig.Plugin {
		return cnirig.RefBridge("cni0", cidr, filepath.Join(dir, "host-local"), false)
	}
	portmap := func(string) cnirig.Plugin { return cnirig.Portmap() }
	loopback := func(string) cnirig.Plugin { return cnirig.Loopback() }

	var setups []*setup
	for idx, def := range []struct {
		name     string
		parallel bool
		plugins  []func(string) cnirig.Plugin
	}{
		{nameFloor, false, []func(string) cnirig.Plugin{loopback}},
		{nameRef, true, []func(string) cnirig.Plugin{bridge}},
		{nameRefPortmap, false, []func(string) cnirig.Plugin{bridge, portmap}},
		{nameRefNoMasq, false, []func(string) cnirig.Plugin{bridgeNoMasq}},
		{nameDrover, true, []func(string) cnirig.Plugin{drover}},
		{nameDroverPortmap, false, []func(string) cnirig.Plugin{drover, portmap}},
	} {
		s, err := mk(idx, def.name, def.parallel, def.plugins...)
		if err != nil {
			return nil, err
		}
		setups = append(setups, s)
	}

	loadStart := loadAverage()
	fmt.Fprintf(os.Stderr, "cnibench: %d configurations x %d pods; warming up\n", len(setups), b.pods)
	for _, s := range setups {
		if err := s.warmUp(b); err != nil {
			return nil, err
		}
	}
	// Interleaved: pod i of every configuration before pod i+1 of any, so
	// a noisy moment on a shared machine hits them all alike.
	probe, err := b.newVethProbe()
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(os.Stderr, "cnibench: sequential ADDs and DELs")
	for _, verb := range []string{"ADD", "DEL"} {
		for i := 0; i < b.pods; i++ {
			for _, s := range setups {
				d, err := s.call(verb, i)
				if err != nil {
					return nil, err
				}
				if verb == "ADD" {
					s.result.add = append(s.result.add, d)
				} else {
					s.result.del = append(s.result.del, d)
				}
			}
			probeCall := probe.addOne
			if verb == "DEL" {
				probeCall = probe.deleteOne
			}
			if err := probeCall(b, i); err != nil {
				return nil, err
			}
		}
	}
	// One wall time is one sample: rounds, taking turns between the
	// configurations like the sequential calls, and the median is reported.
	fmt.Fprintf(os.Stderr, "cnibench: %d rounds of %d parallel ADDs and DELs\n", b.parallelRounds, b.pods)
	for round := 0; round < b.parallelRounds; round++ {
		for _, s := range setups {
			if !s.parallel {
				continue
			}
			for _, verb := range []string{"ADD", "DEL"} {
				wall, err := s.parallelCalls(verb)
				if err != nil {
					return nil, err
				}
				if verb == "ADD" {
					s.result.parallelAdd = append(s.result.parallelAdd, wall)
				} else {
					s.result.parallelDel = append(s.result.parallelDel, wall)
				}
			}
		}
	}

	rep := &report{loadStart: loadStart, loadEnd: loadAverage(), pods: b.pods, at: time.Now().UTC(),
		cpus: runtime.NumCPU(), results: map[string]result{}, vethDel: probe.took}
	for _, s := range setups {
		rep.results[s.name] = s.result
	}
	return rep, nil
}

// warmUp attaches and detaches one extra pod, so the first timed call pays
// neither for the bridge's creation nor for a cold page cache.
func (s *setup) warmUp(b *bench) error {
	p, err := b.newNS()
	if err != nil {
		return err
	}
	s.pods = append(s.pods, p)
	last := len(s.pods) - 1
	if _, err := s.call("ADD", last); err != nil {
		return err
	}
	_, err = s.call("DEL", last)
	s.pods = s.pods[:last]
	return err
}

func (s *setup) rt(i int) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: fmt.Sprintf("bench-%04d", i),
		NetNS:       s.pods[i].Path(),
		IfName:      "eth0",
	}
}

// call runs one verb for pod i on a thread in the node namespace (the exec'd
// plugin inherits it) and times it.
func (s *setup) call(verb string, i int) (time.Duration, error) {
	var took time.Duration
	err := s.node.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		var err error
		if verb == "ADD" {
			_, err = s.cni.AddNetworkList(ctx, s.list, s.rt(i))
		} else {
			err = s.cni.DelNetworkList(ctx, s.list, s.rt(i))
		}
		took = time.Since(start)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s %s pod %d: %w", s.name, verb, i, err)
	}
	return took, nil
}

// parallelCalls releases one call per pod at once and returns the wall time
// until the last one returns.
func (s *setup) parallelCalls(verb string) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, len(s.pods))
	ready := make(chan struct{})
	for i := range s.pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			_, errs[i] = s.call(verb, i)
		}()
	}
	start := time.Now()
	close(ready)
	wg.Wait()
	wall := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return wall, nil
}
