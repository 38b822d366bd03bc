package flexvolume_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPersistence: data written in one pod is read back in another after
// the volume was fully released (loop device freed), and again after
// everything in memory is gone: the driver keeps nothing in memory between
// calls, so a kubelet restart is a new process reading the same state, and
// the page cache is dropped so the bytes come from the image file.
func TestPersistence(t *testing.T) {
	for _, fs := range []struct{ fsType, size string }{{"ext4", "64Mi"}, {"xfs", "300Mi"}} {
		t.Run(fs.fsType, func(t *testing.T) {
			e := newEnv(t, nil)
			opts := map[string]string{"size": fs.size}
			podA, podB, podC := e.podDir("pod-a", "v"), e.podDir("pod-b", "v"), e.podDir("pod-c", "v")
			data := make([]byte, 3<<20)
			rand.Read(data)

			e.mustSucceed("mount", podA, kubeletOptions("pv-keep", false, fs.fsType, "", opts))
			writeFileSync(t, filepath.Join(podA, "blob"), data)
			e.mustSucceed("unmount", podA)
			e.assertReleased("pv-keep")

			e.mustSucceed("mount", podB, kubeletOptions("pv-keep", false, fs.fsType, "", opts))
			if got, err := os.ReadFile(filepath.Join(podB, "blob")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("pod B reads %d bytes (%v), want pod A's %d", len(got), err, len(data))
			}

			// kubelet restart while pod B runs: kubelet reconstructs the
			// volume and calls unmount with the pod dir only. Losing the
			// driver's attachment records on top must not matter either:
			// the mount table names the volume.
			os.RemoveAll(filepath.Join(e.stateDir, "attachments"))
			os.MkdirAll(filepath.Join(e.stateDir, "attachments"), 0o700)
			e.mustSucceed("unmount", podB)
			e.assertReleased("pv-keep")
			os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)

			// Mounting with no size works: the volume exists.
			e.mustSucceed("mount", podC, kubeletOptions("pv-keep", false, "", "", nil))
			if got, err := os.ReadFile(filepath.Join(podC, "blob")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("after restart pod C reads %d bytes (%v), want %d", len(got), err, len(data))
			}
			e.mustSucceed("unmount", podC)
			e.assertReleased("pv-keep")
		})
	}
}

// TestFSGroupSetOnlyAtFirstFormat: the fsGroup of the pod that made the
// filesystem owns its root; later mounts with other fsGroups, while that
// pod still runs and after the volume was released, leave the ownership
// and mode alone (kubelet applies their fsGroup itself, per pod policy).
func TestFSGroupSetOnlyAtFirstFormat(t *testing.T) {
	e := newEnv(t, nil)
	size := map[string]string{"size": "32Mi"}
	podA, podB, podC := e.podDir("pod-a", "v"), e.podDir("pod-b", "v"), e.podDir("pod-c", "v")
	owner := func(dir string) (uint32, uint32, uint32) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		return st.Uid, st.Gid, st.Mode & 0o7777
	}
	e.mustSucceed("mount", podA, kubeletOptions("pv-group", false, "", "2000", size))
	uid, gid, mode := owner(podA)
	if gid != 2000 || mode&unix.S_ISGID == 0 {
		t.Fatalf("first format: root %d:%d mode %o, want group 2000 with setgid", uid, gid, mode)
	}
	e.mustSucceed("mount", podB, kubeletOptions("pv-group", false, "", "3000", nil))
	if u, g, m := owner(podB); u != uid || g != gid || m != mode {
		t.Errorf("second pod with fsGroup 3000: root %d:%d %o, want %d:%d %o unchanged", u, g, m, uid, gid, mode)
	}
	e.mustSucceed("unmount", podA)
	e.mustSucceed("unmount", podB)
	e.assertReleased("pv-group")
	e.mustSucceed("mount", podC, kubeletOptions("pv-group", false, "", "4000", nil))
	if u, g, m := owner(podC); u != uid || g != gid || m != mode {
		t.Errorf("mount after release with fsGroup 4000: root %d:%d %o, want %d:%d %o unchanged", u, g, m, uid, gid, mode)
	}
	e.mustSucceed("unmount", podC)
	e.assertReleased("pv-group")
}
