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
// so that the image, mkfs and first-mount steps are all crossed. The next
// call must converge each time.
func TestCrashAtEveryStep(t *testing.T) {
	e := newEnv(t, nil)
	mountSteps := []string{"locked", "image-sized", "attached", "formatted", "global-mounted", "bound"}
	unmountSteps := []string{"locked", "pod-unmounted", "global-unmounted"}
	for i, step := range mountSteps {
		t.Run("mount killed after "+step, func(t *testing.T) {
			vol := fmt.Sprintf("pv-step-%d", i)
			pod := e.podDir("pod-"+vol, "v")
			opts := kubeletOptions(vol, false, "", "1000", map[string]string{"size": "32Mi"})
			r := e.runEnvNoCheck([]string{"DROVER_LOCAL_FAILPOINT=" + step}, "mount", pod, opts)
			if r.code != -1 || r.stdout != "" {
				t.Fatalf("failpoint %s did not kill the driver: code %d, %q", step, r.code, r.stdout)
			}
			e.setUp(pod, opts)
			if loops := e.loopsOf(vol); len(loops) != 1 {
				t.Errorf("loop devices %v, want one", loops)
			}
			writeFileSync(t, filepath.Join(pod, "data"), []byte(step))
			e.mustSucceed("unmount", pod)
			e.assertReleased(vol)
			e.setUp(pod, opts)
			if b, _ := os.ReadFile(filepath.Join(pod, "data")); string(b) != step {
				t.Errorf("data after crash and remount: %q", b)
			}
			e.mustSucceed("unmount", pod)
		})
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

// TestCrashAtRandomPoints kills mount and unmount with SIGKILL at random
// moments, at least 50 times, over volumes that are new (so kills land in
// image creation and mkfs too) and warm. After each kill the call is
// retried as kubelet would; the volume must converge: one loop device
// while mounted, none after unmount, and every file written so far intact.
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

	// Calibrate the kill window on this machine: a first mount (mkfs) and
	// a warm one.
	cal := e.podDir("calibrate", "v")
	calOpts := kubeletOptions("pv-calibrate", false, "", "", map[string]string{"size": "32Mi"})
	t0 := time.Now()
	e.mustSucceed("mount", cal, calOpts)
	cold := time.Since(t0)
	e.mustSucceed("unmount", cal)
	t0 = time.Now()
	e.mustSucceed("mount", cal, calOpts)
	warm := time.Since(t0)
	t0 = time.Now()
	e.mustSucceed("unmount", cal)
	warmUnmount := time.Since(t0)
	t.Logf("kill windows: first mount %v, warm mount %v, unmount %v", cold, warm, warmUnmount)

	// Keep going until enough kills landed mid-call, whatever the load
	// on the machine does to the calibrated windows.
	for i := 0; i < iterations || kills < minKills; i++ {
		if i >= maxIterations {
			t.Fatalf("only %d kills landed mid-call in %d attempts", kills, 2*i)
		}
		vol := fmt.Sprintf("pv-crash-%d", i/perVolume)
		pod := e.podDir(fmt.Sprintf("pod-%d", i), "v")
		opts := kubeletOptions(vol, false, "", "", map[string]string{"size": "32Mi"})
		window := warm
		if i%perVolume == 0 {
			window = cold
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
