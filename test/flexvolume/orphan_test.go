package flexvolume_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/drover-net/drover/pkg/voladmin"
	"github.com/drover-net/drover/pkg/volumes"
)

// makeOrphan leaves vol the way a mount killed between its global mount and
// its bind mount does, and then deletes the pod dir as kubelet does when the
// pod goes away before a retry: kubelet never calls unmount for it.
func (e *env) makeOrphan(vol string) {
	e.t.Helper()
	pod := e.podDir("pod-"+vol, "v")
	opts := kubeletOptions(vol, false, "", "", map[string]string{"size": "32Mi"})
	if r := e.runEnvNoCheck([]string{"DROVER_LOCAL_FAILPOINT=global-mounted"}, "mount", pod, opts); r.code != -1 {
		e.t.Fatalf("failpoint did not kill the driver: %d %q", r.code, r.stdout)
	}
	if err := os.RemoveAll(filepath.Dir(filepath.Dir(filepath.Dir(pod)))); err != nil {
		e.t.Fatal(err)
	}
	e.assertOrphan(vol)
}

// assertOrphan checks vol is mounted globally, attached, and used by no pod.
func (e *env) assertOrphan(vol string) {
	e.t.Helper()
	if _, ok := mountAt(e.t, filepath.Join(e.stateDir, "mounts", vol)); !ok {
		e.t.Fatalf("volume %s: no global mount", vol)
	}
	if loops := e.loopsOf(vol); len(loops) != 1 {
		e.t.Fatalf("volume %s: loop devices %v, want one", vol, loops)
	}
}

// TestOrphanedGlobalMountIsReleased: the mount or unmount of another volume
// releases an orphaned global mount and its loop device, and the volume
// mounts again afterwards.
func TestOrphanedGlobalMountIsReleased(t *testing.T) {
	e := newEnv(t, nil)
	other := e.podDir("pod-other", "v")
	otherOpts := kubeletOptions("pv-other", false, "", "", map[string]string{"size": "32Mi"})

	t.Run("another volume's mount releases it", func(t *testing.T) {
		e.makeOrphan("pv-orphan-a")
		e.mustSucceed("mount", other, otherOpts)
		e.assertReleased("pv-orphan-a")
		if _, ok := mountAt(t, other); !ok {
			t.Errorf("the sweeping mount did not mount its own volume")
		}
		lines := e.logLines()
		if d, _ := lines[len(lines)-1]["detail"].(string); !strings.Contains(d, "released=pv-orphan-a") {
			t.Errorf("the sweeping call's log line does not say what it released: %q", d)
		}
	})
	t.Run("another volume's unmount releases it", func(t *testing.T) {
		e.makeOrphan("pv-orphan-b")
		e.mustSucceed("unmount", other)
		e.assertReleased("pv-orphan-b")
		e.assertReleased("pv-other")
	})
	t.Run("an idempotent unmount of a pod dir already gone releases it too", func(t *testing.T) {
		e.makeOrphan("pv-orphan-c")
		e.mustSucceed("unmount", other)
		e.assertReleased("pv-orphan-c")
	})
	t.Run("a released orphan mounts again with its data", func(t *testing.T) {
		pod := e.podDir("pod-again", "v")
		opts := kubeletOptions("pv-orphan-a", false, "", "", nil)
		e.mustSucceed("mount", pod, opts)
		writeFileSync(t, filepath.Join(pod, "f"), []byte("after"))
		e.mustSucceed("unmount", pod)
		e.mustSucceed("mount", pod, opts)
		if b, _ := os.ReadFile(filepath.Join(pod, "f")); string(b) != "after" {
			t.Errorf("data: %q", b)
		}
		e.mustSucceed("unmount", pod)
		e.assertReleased("pv-orphan-a")
	})
	if n := len(recordsOf(t, e)); n != 0 {
		t.Errorf("%d attachment records left", n)
	}
}

// TestSweepSkipsALockedVolume: a volume whose lock is held looks like an
// orphan to the mount table (global mount, no bind) but may be a mount in
// progress, between its global mount and its bind; the sweep leaves it. Once
// the lock is free, the next call releases it.
func TestSweepSkipsALockedVolume(t *testing.T) {
	e := newEnv(t, nil)
	e.makeOrphan("pv-busy")
	release := holdLock(t, filepath.Join(e.stateDir, "locks", "pv-busy.lock"))
	other := e.podDir("pod-other", "v")
	e.mustSucceed("mount", other, kubeletOptions("pv-other", false, "", "", map[string]string{"size": "32Mi"}))
	e.mustSucceed("unmount", other)
	e.assertOrphan("pv-busy")
	if v := listed(t, e, "pv-busy"); v.Orphaned || v.GlobalMount == "" {
		t.Errorf("admin list while the volume is locked: %+v, want globally mounted and not orphaned", v)
	}
	release()
	if v := listed(t, e, "pv-busy"); !v.Orphaned {
		t.Errorf("admin list once the lock is free: %+v, want orphaned", v)
	}
	out, errOut, code := runAdmin("--state-dir", e.stateDir, "list")
	if code != 0 || !strings.Contains(out, "(orphaned: no pod)") || !strings.Contains(out, "drover-volumes sweep") {
		t.Errorf("table: exit %d %s %s", code, out, errOut)
	}
	e.mustSucceed("unmount", other)
	e.assertReleased("pv-busy")
}

// TestAdminSweep: drover-volumes sweep releases orphans at once, on a node
// where no mount or unmount comes.
func TestAdminSweep(t *testing.T) {
	e := newEnv(t, nil)
	e.makeOrphan("pv-idle")
	out, errOut, code := runAdmin("--state-dir", e.stateDir, "-o", "json", "sweep")
	var res struct{ Released []string }
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res.Released) != 1 || res.Released[0] != "pv-idle" {
		t.Fatalf("sweep: exit %d %q %s", code, out, errOut)
	}
	e.assertReleased("pv-idle")
	out, _, code = runAdmin("--state-dir", e.stateDir, "sweep")
	if code != 0 || !strings.Contains(out, "no orphaned volume") {
		t.Errorf("second sweep: exit %d %q", code, out)
	}
}

// runAdmin runs the admin command in-process.
func runAdmin(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := voladmin.Main(args, &out, &errb, func(string) string { return "" })
	return out.String(), errb.String(), code
}

// listed is the admin command's JSON entry for vol.
func listed(t *testing.T, e *env, vol string) volumes.VolumeInfo {
	t.Helper()
	out, errOut, code := runAdmin("--state-dir", e.stateDir, "-o", "json", "list")
	var vols []volumes.VolumeInfo
	if code != 0 || json.Unmarshal([]byte(out), &vols) != nil {
		t.Fatalf("list: exit %d %s %s", code, out, errOut)
	}
	for _, v := range vols {
		if v.Name == vol {
			return v
		}
	}
	t.Fatalf("list has no %s: %s", vol, out)
	return volumes.VolumeInfo{}
}

// TestSweepNeverReleasesAMountInProgress races first mounts of one volume
// (each makes the global mount, then the bind) against a stream of mounts
// and unmounts of other volumes, each of which sweeps. Every mount must end
// bound to the volume's own filesystem with its data, never to the empty
// directory a released global mount would leave.
func TestSweepNeverReleasesAMountInProgress(t *testing.T) {
	e := newEnv(t, nil)
	const rounds = 25
	opts := kubeletOptions("pv-target", false, "", "", map[string]string{"size": "32Mi"})
	seed := e.podDir("pod-seed", "v")
	e.mustSucceed("mount", seed, opts)
	writeFileSync(t, filepath.Join(seed, "marker"), []byte("target"))
	e.mustSucceed("unmount", seed)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			pod := e.podDir(fmt.Sprintf("pod-sweeper-%d", w), "v")
			o := kubeletOptions(fmt.Sprintf("pv-sweeper-%d", w), false, "", "", map[string]string{"size": "32Mi"})
			for {
				select {
				case <-stop:
					return
				default:
				}
				if r := e.run("mount", pod, o); r.Status != "Success" {
					t.Errorf("sweeper mount: %s", r.Message)
					return
				}
				if r := e.run("unmount", pod); r.Status != "Success" {
					t.Errorf("sweeper unmount: %s", r.Message)
					return
				}
			}
		}(w)
	}
	for i := 0; i < rounds && !t.Failed(); i++ {
		pod := e.podDir(fmt.Sprintf("pod-target-%d", i), "v")
		r := e.run("mount", pod, opts)
		if r.Status != "Success" {
			t.Errorf("round %d: mount: %s", i, r.Message)
			break
		}
		if b, err := os.ReadFile(filepath.Join(pod, "marker")); err != nil || string(b) != "target" {
			t.Errorf("round %d: pod dir does not hold the volume: %q %v", i, b, err)
		}
		if loops := e.loopsOf("pv-target"); len(loops) != 1 {
			t.Errorf("round %d: loop devices %v", i, loops)
		}
		if r := e.run("unmount", pod); r.Status != "Success" {
			t.Errorf("round %d: unmount: %s", i, r.Message)
		}
	}
	close(stop)
	wg.Wait()
	e.assertReleased("pv-target")
}

// recordsOf lists the attachment records left in the state dir.
func recordsOf(t *testing.T, e *env) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.stateDir, "attachments"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range entries {
		out = append(out, x.Name())
	}
	return out
}
