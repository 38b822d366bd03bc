package cni_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/drover-net/drover/internal/cnirig"
	"github.com/drover-net/drover/pkg/datapath"
)

const (
	// minKills is how many ADDs each scenario must kill mid-flight.
	minKills = 50
	// killWorkers ADDs run and die at once, so kills land while other
	// processes hold or wait for the store lock.
	killWorkers = 5
	// minKillDelay is the least bound of the random delay between exec and
	// SIGKILL: about a whole ADD on an idle machine of this class. Under
	// load (-race, parallel tests) an ADD takes longer, so the bound grows
	// to the measured length of one, and kills land everywhere from process
	// start to the printed result.
	minKillDelay = 15 * time.Millisecond
)

// TestKilledADD kills ADDs with SIGKILL at random points and checks that the
// runtime's ways of recovering — DEL, GC, or a repeated ADD — leave no
// leaked address or veth, and that one address is never held by two
// containers, checked continuously on the store and after each round on the
// pods' interfaces. DROVER_CRASH_SEED reruns one sequence of delays.
func TestKilledADD(t *testing.T) {
	requireRefPlugins(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DROVER_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("DROVER_CRASH_SEED: %v", err)
		}
	}
	t.Logf("DROVER_CRASH_SEED=%d", seed)

	for i, tc := range []struct {
		name    string
		recover string
	}{
		{"DEL after each killed ADD releases its address and veth", "del"},
		{"GC after killed ADDs keeps the valid attachments and removes the rest", "gc"},
		{"an ADD repeated after a killed ADD converges on one address", "readd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k := &killer{t: t, n: newNode(t, fmt.Sprintf("10.244.%d.0/24", 20+i)), rng: rand.New(rand.NewPCG(seed, uint64(i)))}
			k.run(tc.recover)
		})
	}
}

// killer runs one scenario's rounds of killed ADDs on one node.
type killer struct {
	t        *testing.T
	n        *node
	rng      *rand.Rand
	maxDelay time.Duration

	pods      []*pod                     // every pod not yet DELeted
	completed map[string]*current.Result // ADDs that finished before the kill
	killed    int
	// What killed ADDs left behind, which shows where the kills landed:
	// leftBehind counts the kills that left an allocation or an interface,
	// so landed after the ADD allocated.
	leftRecord, leftAddress, leftBehind int
}

func (k *killer) run(recoverBy string) {
	t, n, c := k.t, k.n, libcniClient{}
	k.completed = map[string]*current.Result{}
	stop := k.watchStore()

	// Pods already running on the node: GC must keep them and kills must
	// never disturb them. Started together, as the killed ADDs will be,
	// they also measure how long an ADD takes under this load.
	running := make([]*pod, killWorkers)
	for i := range running {
		running[i] = newPod(t, fmt.Sprintf("running-%d", i))
	}
	noKill := make([]time.Duration, killWorkers)
	for i := range noKill {
		noKill[i] = -1
	}
	var took []time.Duration
	for i, l := range k.launch(running, noKill) {
		if l.err != nil || l.killed {
			t.Fatalf("ADD %s: %v", running[i].id, l.err)
		}
		requireAttachment(t, n, running[i], l.result)
		took = append(took, l.took)
	}
	// The median, not the longest: the concurrent ADDs queue on the store
	// lock, so the last of them mostly measures waiting.
	slices.Sort(took)
	k.maxDelay = max(minKillDelay, took[len(took)/2])
	t.Logf("ADDs of %d pods at once took %v; kill delays drawn from 0..%v", len(took), took, k.maxDelay)

	// The rounds go on until enough kills have landed mid-flight and some
	// of them after the ADD allocated: kills that all land before that
	// would prove nothing about recovery. The delay bound adapts until they
	// do, so only a machine where they never can fails here.
	for round := 0; k.killed < minKills || k.leftBehind == 0; round++ {
		if round >= 4*minKills/killWorkers {
			t.Fatalf("after %d rounds, %d of %d ADDs killed mid-flight and %d of those after allocating: the kills do not land across the whole ADD",
				round, k.killed, round*killWorkers, k.leftBehind)
		}
		batch := make([]*pod, killWorkers)
		for i := range batch {
			batch[i] = newPod(t, fmt.Sprintf("killed-%02d-%d", round, i))
		}
		k.killRound(batch)
		k.pods = append(k.pods, batch...)
		k.requireConsistent(append(append([]*pod{}, running...), k.pods...))
		k.countLeftovers(batch)

		switch recoverBy {
		case "del":
			for _, p := range batch {
				if err := c.del(t, n, p); err != nil {
					t.Fatalf("DEL %s after a killed ADD: %v", p.id, err)
				}
				if addrs := podAddrs(t, p); len(addrs) > 0 {
					t.Errorf("%s keeps %v after DEL", p.id, addrs)
				}
			}
			k.pods = nil
		case "readd":
			for _, p := range batch {
				res, err := c.add(t, n, p)
				if err != nil {
					t.Fatalf("ADD %s again after a killed ADD: %v", p.id, err)
				}
				requireAttachment(t, n, p, res)
			}
		}
	}
	t.Logf("%d ADDs killed mid-flight (%d left an allocation or an interface: %d an allocation, %d an addressed pod interface), %d finished before their kill; final delay bound %v",
		k.killed, k.leftBehind, k.leftRecord, k.leftAddress, len(k.completed), k.maxDelay)

	all := append(append([]*pod{}, running...), k.pods...)
	if recoverBy == "gc" {
		valid := []types.GCAttachment{}
		keep := map[string]bool{}
		for _, p := range running {
			valid = append(valid, types.GCAttachment{ContainerID: p.id, IfName: p.ifName})
			keep[p.id] = true
		}
		for id := range k.completed {
			valid = append(valid, types.GCAttachment{ContainerID: id, IfName: "eth0"})
			keep[id] = true
		}
		if err := c.gc(t, n, valid); err != nil {
			t.Fatalf("GC: %v", err)
		}
		for _, a := range n.allocations(t) {
			if !keep[a.containerID] {
				t.Errorf("GC left %s allocated to %s, not a valid attachment", a.ip, a.containerID)
			}
		}
		if got, want := len(n.allocations(t)), len(valid); got != want {
			t.Errorf("after GC %d addresses are allocated, want one per valid attachment: %d", got, want)
		}
		if got, want := len(n.hostVeths(t)), len(valid); got != want {
			t.Errorf("after GC %d host veths remain, want one per valid attachment: %d", got, want)
		}
		var kept []*pod
		for _, p := range all {
			if keep[p.id] {
				kept = append(kept, p)
			} else if addrs := podAddrs(t, p); len(addrs) > 0 {
				t.Errorf("GC left %v on killed pod %s", addrs, p.id)
			}
		}
		all = kept
	}
	for _, p := range running {
		if err := ping(p.ns, n.gateway); err != nil {
			t.Errorf("running pod %s lost its network: %v", p.id, err)
		}
	}
	for _, p := range all {
		if err := c.del(t, n, p); err != nil {
			t.Errorf("DEL %s: %v", p.id, err)
		}
	}
	if err := stop(); err != nil {
		t.Error(err)
	}
	n.requireClean(t, "recovery from killed ADDs")
}

// killRound starts one ADD per pod at once and SIGKILLs each after its own
// random delay.
func (k *killer) killRound(batch []*pod) {
	delays := make([]time.Duration, len(batch))
	for i := range delays {
		delays[i] = time.Duration(k.rng.Int64N(int64(k.maxDelay)))
	}
	finished := 0
	for i, l := range k.launch(batch, delays) {
		switch {
		case l.err != nil:
			k.t.Errorf("%s: %v", batch[i].id, l.err)
		case l.killed:
			k.killed++
		default:
			k.completed[batch[i].id] = l.result
			finished++
		}
	}
	// Keep the bound near an ADD's real length as the load changes: kills
	// that always land late, or always early, test half the code.
	switch {
	case finished > len(batch)/2:
		k.maxDelay = max(minKillDelay, k.maxDelay*3/4)
	case finished == 0:
		k.maxDelay = min(time.Second, k.maxDelay*5/4)
	}
}

// launched is how one exec'd ADD ended.
type launched struct {
	killed bool
	result *current.Result // when it finished
	took   time.Duration   // exec to exit
	err    error           // it failed on its own
}

// launch execs ADD for every pod at once, as the runtime would, and
// SIGKILLs each after its delay; a negative delay lets it finish.
func (k *killer) launch(batch []*pod, delays []time.Duration) []launched {
	t := k.t
	out := make([]launched, len(batch))
	conf := k.n.pluginConf(t)
	var wg sync.WaitGroup
	for i, p := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var stdout bytes.Buffer
			cmd := exec.Command(droverBin)
			cmd.Stdin, cmd.Stdout = bytes.NewReader(conf), &stdout
			cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + p.id, "CNI_NETNS=" + p.ns.Path(),
				"CNI_IFNAME=" + p.ifName, "CNI_PATH=" + cniPath, "PATH=" + os.Getenv("PATH")}
			// Started on a thread in the node namespace, the plugin runs
			// on the node; the kill and the wait need no namespace.
			start := time.Now()
			if err := k.n.do(t, cmd.Start); err != nil {
				out[i].err = fmt.Errorf("start ADD: %w", err)
				return
			}
			if delays[i] >= 0 {
				time.Sleep(delays[i])
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
			err := cmd.Wait()
			out[i].took = time.Since(start)
			var ee *exec.ExitError
			switch {
			case err == nil:
				res := &current.Result{}
				if err := json.Unmarshal(stdout.Bytes(), res); err != nil {
					out[i].err = fmt.Errorf("finished ADD printed %q: %w", stdout.Bytes(), err)
				}
				out[i].result = res
			case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled():
				out[i].killed = true
			default:
				out[i].err = fmt.Errorf("ADD failed on its own: %w: %s", err, stdout.Bytes())
			}
		}()
	}
	wg.Wait()
	return out
}

// countLeftovers notes what the round's killed ADDs left behind.
func (k *killer) countLeftovers(batch []*pod) {
	held := map[string]bool{}
	for _, a := range k.n.allocations(k.t) {
		held[a.containerID] = true
	}
	veths := map[string]bool{}
	for _, name := range k.n.hostVeths(k.t) {
		veths[name] = true
	}
	for _, p := range batch {
		if k.completed[p.id] != nil {
			continue
		}
		addressed := len(podAddrs(k.t, p)) > 0
		if held[p.id] {
			k.leftRecord++
		}
		if addressed {
			k.leftAddress++
		}
		if held[p.id] || addressed || veths[datapath.HostVethName(p.id, p.ifName)] {
			k.leftBehind++
		}
	}
}

// pluginConf is drover's network config as a runtime passes it on stdin.
func (n *node) pluginConf(t testing.TB) []byte {
	t.Helper()
	conf := cnirig.Drover(n.podCIDR.String(), n.dataDir, n.stateFile)
	conf["name"], conf["cniVersion"] = n.netName, n.list.CNIVersion
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// requireConsistent checks, with no plugin running, that the pods' real
// addresses agree with the store: no container holds two records, no two
// pods carry one address, and every address on a pod is recorded as that
// pod's.
func (k *killer) requireConsistent(pods []*pod) {
	t := k.t
	owner := map[string]string{}
	perContainer := map[string]int{}
	for _, a := range k.n.allocations(t) {
		owner[a.ip] = a.containerID
		perContainer[a.containerID]++
	}
	for id, count := range perContainer {
		if count > 1 {
			t.Errorf("container %s holds %d addresses", id, count)
		}
	}
	onPod := map[string]string{}
	for _, p := range pods {
		addrs := podAddrs(t, p)
		if len(addrs) > 1 {
			t.Errorf("pod %s carries %d addresses: %v", p.id, len(addrs), addrs)
		}
		for _, ip := range addrs {
			if other, dup := onPod[ip]; dup {
				t.Errorf("pods %s and %s both carry %s", other, p.id, ip)
			}
			onPod[ip] = p.id
			if owner[ip] != p.id {
				t.Errorf("pod %s carries %s, which the store records as %q's", p.id, ip, owner[ip])
			}
		}
	}
}

// watchStore polls the store while plugins run and die: a record must always
// be whole, and a container never holds two. stop ends the watch and
// returns what it saw go wrong.
func (k *killer) watchStore() (stop func() error) {
	done := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		var errs []error
		for polls := 0; ; polls++ {
			select {
			case <-done:
				if len(errs) > 10 {
					errs = append(errs[:10], fmt.Errorf("and %d more", len(errs)-10))
				}
				result <- errors.Join(errs...)
				return
			case <-time.After(time.Millisecond):
			}
			allocs, err := readAllocations(k.n.storeDir())
			if err != nil {
				errs = append(errs, fmt.Errorf("poll %d: %w", polls, err))
				continue
			}
			seen := map[string]string{}
			for _, a := range allocs {
				if ip, dup := seen[a.containerID]; dup {
					errs = append(errs, fmt.Errorf("poll %d: container %s holds %s and %s", polls, a.containerID, ip, a.ip))
				}
				seen[a.containerID] = a.ip
			}
		}
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { close(done); err = <-result })
		return err
	}
	// A test that stops early still ends the watch.
	k.t.Cleanup(func() { _ = stop() })
	return stop
}
