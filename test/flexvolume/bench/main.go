// Command bench measures the drover/local Flexvolume driver against the same
// steps done by hand with the standard tools, in the same run, and prints a
// Markdown section for docs/benchmarks.md. It runs as root in a temp dir and
// removes every mount and loop device it made. scripts/bench-flexvolume.sh
// builds the driver and runs it.
//
// Timings are wall time of the whole call as kubelet would see it: the
// driver's time includes its process start; the hand path execs each tool
// directly (losetup, mkfs.ext4, mount, mount --bind), no shell in between,
// with the same mkfs options the driver uses.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/drover-net/drover/pkg/loopdev"
	"github.com/drover-net/drover/pkg/mountinfo"
	"github.com/drover-net/drover/pkg/volumes"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
)

func main() {
	driver := flag.String("driver", "", "path of the built driver (bin/local)")
	n := flag.Int("n", 30, "iterations per measurement")
	nvol := flag.Int("volumes", 50, "volumes mounted concurrently")
	size := flag.String("size", "256Mi", "volume size")
	flag.Parse()
	if os.Geteuid() != 0 || *driver == "" {
		fmt.Fprintln(os.Stderr, "bench: run as root with -driver PATH")
		os.Exit(2)
	}
	b, err := newBench(*driver, *size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer b.cleanup()
	if err := b.run(*n, *nvol); err != nil {
		b.cleanup()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	root, exe, size string
	sizeBytes       int64
	seq             int
}

func newBench(driver, size string) (*bench, error) {
	root, err := os.MkdirTemp("", "drover-bench-")
	if err != nil {
		return nil, err
	}
	root, _ = filepath.EvalSymlinks(root)
	b := &bench{root: root, exe: filepath.Join(root, "drover~local", "local"), size: size}
	if err := os.MkdirAll(filepath.Dir(b.exe), 0o755); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(driver)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(b.exe, data, 0o755); err != nil {
		return nil, err
	}
	cfg, _ := json.Marshal(map[string]string{"stateDir": filepath.Join(root, "state"), "logDir": filepath.Join(root, "log")})
	if err := os.WriteFile(filepath.Join(filepath.Dir(b.exe), "drover-local.json"), cfg, 0o644); err != nil {
		return nil, err
	}
	q, err := resource.ParseQuantity(size)
	if err != nil || q.Sign() <= 0 {
		return nil, fmt.Errorf("size %q: want e.g. 256Mi", size)
	}
	b.sizeBytes = q.Value()
	return b, nil
}

// driverCall runs the driver as kubelet does and times it.
func (b *bench) driverCall(args ...string) (time.Duration, error) {
	cmd := exec.Command(b.exe, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	t0 := time.Now()
	out, err := cmd.Output()
	d := time.Since(t0)
	if err != nil || !strings.Contains(string(out), `"Success"`) {
		return d, fmt.Errorf("driver %s: %v: %s", args[0], err, out)
	}
	return d, nil
}

func (b *bench) options(vol string) string {
	o, _ := json.Marshal(map[string]string{
		"kubernetes.io/fsType": "", "kubernetes.io/readwrite": "rw",
		"kubernetes.io/pvOrVolumeName": vol, "kubernetes.io/pod.name": "bench",
		"kubernetes.io/pod.namespace": "default", "kubernetes.io/pod.uid": "uid",
		"kubernetes.io/serviceAccount.name": "default", "size": b.size,
	})
	return string(o)
}

func (b *bench) podDir() string {
	b.seq++
	d := filepath.Join(b.root, "pods", fmt.Sprint(b.seq), "volumes", "drover~local", "v")
	os.MkdirAll(d, 0o750)
	return d
}

// tool runs one standard tool, as a person or script would.
func tool(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// handMount is the by-hand path: image (first use only), losetup, mkfs
// (first use only), mount, bind mount.
func (b *bench) handMount(img, global, pod string, first bool) (string, time.Duration, error) {
	t0 := time.Now()
	if first {
		if _, err := tool("truncate", "-s", fmt.Sprint(b.sizeBytes), img); err != nil {
			return "", 0, err
		}
	}
	dev, err := tool("losetup", "--find", "--show", img)
	if err != nil {
		return "", 0, err
	}
	if first {
		if _, err := tool("mkfs.ext4", volumes.MkfsExt4Args(dev)...); err != nil {
			return dev, 0, err
		}
	}
	if _, err := tool("mkdir", "-p", global); err != nil {
		return dev, 0, err
	}
	if _, err := tool("mount", "-o", "nosuid,nodev", dev, global); err != nil {
		return dev, 0, err
	}
	if _, err := tool("mount", "--bind", global, pod); err != nil {
		return dev, 0, err
	}
	return dev, time.Since(t0), nil
}

func handUnmount(dev, global, pod string) (time.Duration, error) {
	t0 := time.Now()
	for _, c := range [][]string{{"umount", pod}, {"umount", global}, {"losetup", "-d", dev}} {
		if _, err := tool(c[0], c[1:]...); err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

type series map[string][]time.Duration

func (b *bench) run(n, nvol int) error {
	s := series{}
	handDir := filepath.Join(b.root, "hand")
	os.MkdirAll(handDir, 0o755)
	// Interleave driver and hand iterations so both see the same machine.
	for i := 0; i < n; i++ {
		vol := fmt.Sprintf("first-%d", i)
		pod := b.podDir()
		d, err := b.driverCall("mount", pod, b.options(vol))
		if err != nil {
			return err
		}
		s["driver mount, first use"] = append(s["driver mount, first use"], d)
		if d, err = b.driverCall("unmount", pod); err != nil {
			return err
		}
		s["driver unmount, last user"] = append(s["driver unmount, last user"], d)

		img, global, hpod := filepath.Join(handDir, vol+".img"), filepath.Join(handDir, "g-"+vol), b.podDir()
		dev, d, err := b.handMount(img, global, hpod, true)
		if err != nil {
			return err
		}
		s["hand mount, first use"] = append(s["hand mount, first use"], d)
		if d, err = handUnmount(dev, global, hpod); err != nil {
			return err
		}
		s["hand unmount"] = append(s["hand unmount"], d)
	}
	for i := 0; i < n; i++ {
		vol := fmt.Sprintf("first-%d", i%n)
		pod := b.podDir()
		d, err := b.driverCall("mount", pod, b.options(vol))
		if err != nil {
			return err
		}
		s["driver mount, warm"] = append(s["driver mount, warm"], d)
		// A second pod on the mounted volume: bind mount only.
		pod2 := b.podDir()
		if d, err = b.driverCall("mount", pod2, b.options(vol)); err != nil {
			return err
		}
		s["driver mount, second pod"] = append(s["driver mount, second pod"], d)
		if d, err = b.driverCall("unmount", pod2); err != nil {
			return err
		}
		s["driver unmount, not last"] = append(s["driver unmount, not last"], d)
		if d, err = b.driverCall("unmount", pod); err != nil {
			return err
		}
		s["driver unmount, last user"] = append(s["driver unmount, last user"], d)

		img, global, hpod := filepath.Join(handDir, vol+".img"), filepath.Join(handDir, "g-"+vol), b.podDir()
		dev, d, err := b.handMount(img, global, hpod, false)
		if err != nil {
			return err
		}
		s["hand mount, warm"] = append(s["hand mount, warm"], d)
		if d, err = handUnmount(dev, global, hpod); err != nil {
			return err
		}
		s["hand unmount"] = append(s["hand unmount"], d)
	}

	conc, err := b.concurrent(nvol)
	if err != nil {
		return err
	}
	b.report(s, n, nvol, conc)
	return nil
}

// concurrent mounts nvol new volumes at once (each with mkfs), then again
// warm, then unmounts them at once, and returns the wall times.
func (b *bench) concurrent(nvol int) ([3]time.Duration, error) {
	var res [3]time.Duration
	pods := make([]string, nvol)
	for i := range pods {
		pods[i] = b.podDir()
	}
	phase := func(f func(i int) error) (time.Duration, error) {
		var wg sync.WaitGroup
		errs := make([]error, nvol)
		t0 := time.Now()
		for i := 0; i < nvol; i++ {
			wg.Add(1)
			go func(i int) { defer wg.Done(); errs[i] = f(i) }(i)
		}
		wg.Wait()
		d := time.Since(t0)
		for _, err := range errs {
			if err != nil {
				return d, err
			}
		}
		return d, nil
	}
	mount := func(i int) error {
		_, err := b.driverCall("mount", pods[i], b.options(fmt.Sprintf("conc-%d", i)))
		return err
	}
	unmount := func(i int) error { _, err := b.driverCall("unmount", pods[i]); return err }
	var err error
	if res[0], err = phase(mount); err != nil {
		return res, err
	}
	if _, err = phase(unmount); err != nil {
		return res, err
	}
	if res[1], err = phase(mount); err != nil {
		return res, err
	}
	if res[2], err = phase(unmount); err != nil {
		return res, err
	}
	return res, nil
}

func pct(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(p*float64(len(s))+0.999999) - 1 // nearest rank
	if idx < 0 {
		idx = 0
	}
	return s[idx]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func (b *bench) report(s series, n, nvol int, conc [3]time.Duration) {
	host, _ := os.Hostname()
	var uts unix.Utsname
	unix.Uname(&uts)
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("Measured %s on %s (kernel %s, %d CPUs, load average %s at the end), %d iterations each, volumes of %s (ext4).\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, unix.ByteSliceToString(uts.Release[:]), numCPU(),
		strings.Join(strings.Fields(string(load))[:3], " "), n, b.size)
	fmt.Println("| operation | p50 | p99 | hand path p50 | ratio (p50) |")
	fmt.Println("|---|---|---|---|---|")
	rows := []struct{ name, hand string }{
		{"driver mount, first use", "hand mount, first use"},
		{"driver mount, warm", "hand mount, warm"},
		{"driver mount, second pod", ""},
		{"driver unmount, last user", "hand unmount"},
		{"driver unmount, not last", ""},
		{"hand mount, first use", ""},
		{"hand mount, warm", ""},
		{"hand unmount", ""},
	}
	for _, r := range rows {
		d := s[r.name]
		handCol, ratio := "", ""
		if r.hand != "" {
			h := pct(s[r.hand], 0.5)
			handCol = ms(h)
			ratio = fmt.Sprintf("%.2f×", float64(pct(d, 0.5))/float64(h))
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", r.name, ms(pct(d, 0.5)), ms(pct(d, 0.99)), handCol, ratio)
	}
	fmt.Printf("\n%d volumes mounted concurrently (one driver process each, all succeeded): first use with mkfs %s wall, warm %s wall; unmounting all %s wall.\n",
		nvol, ms(conc[0]), ms(conc[1]), ms(conc[2]))
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// cleanup removes every mount under root (deepest first) and every loop
// device whose image is under root, then the directory.
func (b *bench) cleanup() {
	for i := 0; i < 3; i++ {
		mounts, _ := mountinfo.Read()
		var mine []string
		for _, m := range mounts {
			if strings.HasPrefix(m.MountPoint, b.root+"/") {
				mine = append(mine, m.MountPoint)
			}
		}
		sort.Slice(mine, func(x, y int) bool { return len(mine[x]) > len(mine[y]) })
		for _, p := range mine {
			if unix.Unmount(p, 0) != nil {
				unix.Unmount(p, unix.MNT_DETACH)
			}
		}
	}
	entries, _ := os.ReadDir("/sys/block")
	for _, e := range entries {
		if bf, err := loopdev.BackingFile(e.Name()); err == nil && strings.HasPrefix(bf, b.root+"/") {
			loopdev.DetachFile("/dev/"+e.Name(), bf)
		}
	}
	os.RemoveAll(b.root)
}
