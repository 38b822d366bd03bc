package flexvolume_test

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// start runs the driver and kills it with SIGKILL after delay (or lets it
// finish first). It reports whether the kill landed before the answer.
func (e *env) killAfter(delay time.Duration, extraEnv []string, args ...string) bool {
	e.t.Helper()
	cmd := exec.Command(e.exe, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, extraEnv...)
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return false
	case <-time.After(delay):
		cmd.Process.Kill()
		<-done
		return !cmd.ProcessState.Success()
	}
}

// setUp does what kubelet's SetUpAt does after a failed attempt: a pod dir
// that is already a mount point counts as mounted (prepareForMount), else
// the driver is called again.
func (e *env) setUp(pod, opts string) {
	e.t.Helper()
	if _, ok := mountAt(e.t, pod); ok {
		return
	}
	e.mustSucceed("mount", pod, opts)
}

// TestCrashAtEveryStep kills the driver (SIGKILL, through the failpoint
// hook) right after each named step of mount and unmount, on a fresh volume
// so that the image, mkfs and first-mount steps are all crossed, for ext4
// and for xfs. The next call must converge each time.
func TestCrashAtEveryStep(t *testing.T) {
	e := newEnv(t, nil)
	mountSteps := []string{"locked", "image-sized", "attached", "formatted", "global-mounted", "bound"}
	unmountSteps := []string{"locked", "pod-unmounted", "global-unmounted"}
	for _, fs := range []struct{ fsType, size string }{{"ext4", "32Mi"}, {"xfs", "300Mi"}} {
		for i, step := range mountSteps {
			t.Run(fs.fsType+" mount killed after "+step, func(t *testing.T) {
				vol := fmt.Sprintf("pv-step-%s-%d", fs.fsType, i)
				pod := e.podDir("pod-"+vol, "v")
				opts := kubeletOptions(vol, false, fs.fsType, "1000", map[string]string{"size": fs.size})
				r := e.runEnvNoCheck([]string{"DROVER_LOCAL_FAILPOINT=" + step}, "mount", pod, opts)
				if r.code != -1 || r.stdout != "" {
					t.Fatalf("failpoint %s did not kill the driver: code %d, %q", step, r.code, r.stdout)
				}
				e.setUp(pod, opts)
				if loops := e.loopsOf(vol); len(loops) != 1 {
					t.Errorf("loop devices %v, want one", loops)
				}
				if m, _ := mountAt(t, pod); m.FSType != fs.fsType {
					t.Errorf("pod dir holds %q, want %s", m.FSType, fs.fsType)
				}
				writeFileSync(t, filepath.Join(pod, "data"), []byte(step))
				e.mustSucceed("unmount", pod)
				e.assertReleased(vol)
				e.setUp(pod, opts)
				if b, _ := os.ReadFile(filepath.Join(pod, "data")); string(b) != step {
					t.Errorf("data after crash and remount: %q", b)
				}
				e.mustSucceed("unmount", pod)
				e.assertReleased(vol)
			})
		}
	}
	for _, step := range unmountSteps {
		t.Run("unmount killed after "+step, func(t *testing.T) {
			vol := "pv-unmount-" + step
			pod := e.podDir("pod-"+vol, "v")
			opts := kubeletOptions(vol, false, "", "", map[string]string{"size": "32Mi"})
			e.mustSucceed("mount", pod, opts)
			writeFileSync(t, filepath.Join(pod, "data"), []byte(step))
			r := e.runEnvNoCheck([]string{"DROVER_LOCAL_FAILPOINT=" + step}, "unmount", pod)
			if r.code != -1 {
				t.Fatalf("failpoint %s did not kill the driver", step)
			}
			e.mustSucceed("unmount", pod)
			e.assertReleased(vol)
			e.mustSucceed("mount", pod, opts)
			if b, _ := os.ReadFile(filepath.Join(pod, "data")); string(b) != step {
				t.Errorf("data after crash: %q", b)
			}
			e.mustSucceed("unmount", pod)
			e.assertReleased(vol)
		})
	}
}

// TestInterruptedXFSFormat: the driver is killed while mkfs.xfs runs, after
// mkfs wrote a superblock with sb_inprogress set and before it cleared it
// (the superblock is made by the real mkfs.xfs and byte 126 set back to 1,
// since the real window is a few milliseconds). The kernel refuses to mount
// such a device, so the next mount must format it again, not adopt it.
func TestInterruptedXFSFormat(t *testing.T) {
	e := newEnv(t, nil)
	vol := "pv-xfs-interrupted"
	pod := e.podDir("pod-x", "v")
	opts := kubeletOptions(vol, false, "xfs", "", map[string]string{"size": "300Mi"})
	// Killed right after the loop device was attached, before mkfs: the
	// image and its metadata (not formatted) exist.
	if r := e.runEnvNoCheck([]string{"DROVER_LOCAL_FAILPOINT=attached"}, "mount", pod, opts); r.code != -1 {
		t.Fatalf("failpoint did not kill the driver: %d %q", r.code, r.stdout)
	}
	img := filepath.Join(e.stateDir, "volumes", vol+".img")
	makeInProgressXFS(t, img)

	r := e.run("mount", pod, opts)
	if r.Status != "Success" {
		t.Fatalf("mount after an interrupted mkfs.xfs: %s: %s", r.Status, r.Message)
	}
	if m, _ := mountAt(t, pod); m.FSType != "xfs" {
		t.Fatalf("pod dir holds %q, want xfs", m.FSType)
	}
	writeFileSync(t, filepath.Join(pod, "data"), []byte("kept"))
	e.mustSucceed("unmount", pod)
	e.assertReleased(vol)
	e.mustSucceed("mount", pod, opts)
	if b, _ := os.ReadFile(filepath.Join(pod, "data")); string(b) != "kept" {
		t.Errorf("data after remount: %q", b)
	}
	e.mustSucceed("unmount", pod)
	e.assertReleased(vol)
}

// makeInProgressXFS formats img with the real mkfs.xfs, then sets
// sb_inprogress (byte 126 of the primary superblock) as mkfs.xfs leaves it
// until its last write.
func makeInProgressXFS(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command("mkfs.xfs", "-q", "-f", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v %s", err, out)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 126); err != nil || b[0] != 0 {
		t.Fatalf("sb_inprogress of a finished mkfs.xfs: %v %v, want 0", b, err)
	}
	if _, err := f.WriteAt([]byte{1}, 126); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestCrashAtRandomPoints kills mount and unmount with SIGKILL at random
// moments, at least 50 times, over volumes that are new (so kills land in
// image creation and mkfs too) and warm, every other volume xfs. After each
// kill the call is retried as kubelet would; the volume must converge: one
// loop device while mounted, none after unmount, and every file written so
// far intact.
func TestCrashAtRandomPoints(t *testing.T) {
	e := newEnv(t, nil)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewSource(seed))
	const iterations = 30 // two kill attempts each
	const minKills, maxIterations = 50, 150
	const perVolume = 8
	written := map[string][]string{}
	kills := 0

	// Calibrate the kill window on this machine: a first mount (mkfs) of
	// each filesystem and a warm one.
	volOpts := func(vol string, v int) string {
		if v%2 == 1 {
			return kubeletOptions(vol, false, "xfs", "", map[string]string{"size": "300Mi"})
		}
		return kubeletOptions(vol, false, "", "", map[string]string{"size": "32Mi"})
	}
	cold := map[int]time.Duration{}
	for v := 0; v < 2; v++ {
		pod := e.podDir(fmt.Sprintf("calibrate-%d", v), "v")
		t0 := time.Now()
		e.mustSucceed("mount", pod, volOpts(fmt.Sprintf("pv-calibrate-%d", v), v))
		cold[v] = time.Since(t0)
		e.mustSucceed("unmount", pod)
	}
	cal := e.podDir("calibrate", "v")
	calOpts := volOpts("pv-calibrate-0", 0)
	t0 := time.Now()
	e.mustSucceed("mount", cal, calOpts)
	warm := time.Since(t0)
	t0 = time.Now()
	e.mustSucceed("unmount", cal)
	warmUnmount := time.Since(t0)
	t.Logf("kill windows: first mount %v (ext4) %v (xfs), warm mount %v, unmount %v", cold[0], cold[1], warm, warmUnmount)

	// Keep going until enough kills landed mid-call, whatever the load
	// on the machine does to the calibrated windows.
	for i := 0; i < iterations || kills < minKills; i++ {
		if i >= maxIterations {
			t.Fatalf("only %d kills landed mid-call in %d attempts", kills, 2*i)
		}
		v := i / perVolume
		vol := fmt.Sprintf("pv-crash-%d", v)
		pod := e.podDir(fmt.Sprintf("pod-%d", i), "v")
		opts := volOpts(vol, v)
		window := warm
		if i%perVolume == 0 {
			window = cold[v%2]
		}
		if e.killAfter(time.Duration(rnd.Int63n(int64(window))), nil, "mount", pod, opts) {
			kills++
		}
		e.setUp(pod, opts)
		if loops := e.loopsOf(vol); len(loops) != 1 {
			t.Fatalf("iteration %d: %s has loop devices %v while mounted", i, vol, loops)
		}
		name := fmt.Sprintf("file-%d", i)
		writeFileSync(t, filepath.Join(pod, name), []byte(name))
		written[vol] = append(written[vol], name)

		if e.killAfter(time.Duration(rnd.Int63n(int64(warmUnmount))), nil, "unmount", pod) {
			kills++
		}
		e.mustSucceed("unmount", pod)
		e.assertReleased(vol)
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d kills landed before the answer", kills)
	for vol, files := range written {
		pod := e.podDir("verify-"+vol, "v")
		e.mustSucceed("mount", pod, kubeletOptions(vol, false, "", "", nil))
		for _, f := range files {
			if b, err := os.ReadFile(filepath.Join(pod, f)); err != nil || string(b) != f {
				t.Errorf("%s/%s: %q %v: data lost", vol, f, b, err)
			}
		}
		e.mustSucceed("unmount", pod)
		e.assertReleased(vol)
	}
}

// runEnvNoCheck runs the driver without asserting on the answer (a killed
// driver gives none).
func (e *env) runEnvNoCheck(extraEnv []string, args ...string) result {
	e.t.Helper()
	cmd := exec.Command(e.exe, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, extraEnv...)
	out, _ := cmd.Output()
	return result{stdout: string(out), code: cmd.ProcessState.ExitCode()}
}
