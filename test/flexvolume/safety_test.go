package flexvolume_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNeverFormatsAFilesystem: an image that already holds a filesystem is
// mounted as it is (its data kept), and a volume the driver formatted whose
// filesystem has vanished is refused, not formatted again.
func TestNeverFormatsAFilesystem(t *testing.T) {
	e := newEnv(t, nil)
	t.Run("an image placed by hand with a filesystem and data is adopted, not formatted", func(t *testing.T) {
		pod := e.podDir("pod-adopt", "v")
		// Let the driver make its state dir, then place an image by hand.
		e.mustSucceed("mount", pod, kubeletOptions("pv-first", false, "", "", map[string]string{"size": "32Mi"}))
		e.mustSucceed("unmount", pod)
		img := filepath.Join(e.stateDir, "volumes", "pv-adopt.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Truncate(img, 32<<20)
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "handmade", img).CombinedOutput(); err != nil {
			t.Fatalf("mkfs: %v %s", err, out)
		}
		if out, err := exec.Command("debugfs", "-w", "-R", "mkdir keepme", img).CombinedOutput(); err != nil {
			t.Fatalf("debugfs: %v %s", err, out)
		}
		e.mustSucceed("mount", pod, kubeletOptions("pv-adopt", false, "", "", map[string]string{"size": "32Mi"}))
		if _, err := os.Stat(filepath.Join(pod, "keepme")); err != nil {
			t.Errorf("the existing filesystem was not kept: %v", err)
		}
		e.mustSucceed("unmount", pod)
		e.assertReleased("pv-adopt")
	})
	t.Run("an image placed by hand with an unfinished xfs is refused and left untouched", func(t *testing.T) {
		pod := e.podDir("pod-adopt-xfs", "v")
		img := filepath.Join(e.stateDir, "volumes", "pv-adopt-xfs.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Truncate(img, 300<<20)
		makeInProgressXFS(t, img)
		before := fileDigest(t, img)
		r := e.run("mount", pod, kubeletOptions("pv-adopt-xfs", false, "xfs", "", nil))
		if r.Status != "Failure" || !strings.Contains(r.Message, "never finished") {
			t.Fatalf("got %s: %s", r.Status, r.Message)
		}
		if fileDigest(t, img) != before {
			t.Errorf("the refused image was written to")
		}
		e.assertReleased("pv-adopt-xfs")
	})
	t.Run("a formatted volume whose filesystem vanished is refused, not formatted", func(t *testing.T) {
		pod := e.podDir("pod-lost", "v")
		opts := kubeletOptions("pv-lost", false, "", "", map[string]string{"size": "32Mi"})
		e.mustSucceed("mount", pod, opts)
		e.mustSucceed("unmount", pod)
		img := filepath.Join(e.stateDir, "volumes", "pv-lost.img")
		f, _ := os.OpenFile(img, os.O_WRONLY, 0)
		f.WriteAt(make([]byte, 1<<20), 0) // wipe the superblock
		f.Close()
		r := e.run("mount", pod, opts)
		if r.Status != "Failure" || !strings.Contains(r.Message, "refusing to format") {
			t.Fatalf("got %s: %s", r.Status, r.Message)
		}
		e.assertReleased("pv-lost")
		if _, ok := mountAt(t, pod); ok {
			t.Errorf("pod dir mounted after a refused mount")
		}
	})
}

// TestForeignMounts: the driver neither mounts over nor unmounts a mount it
// did not make, and a repeated mount of its own is an idempotent Success.
func TestForeignMounts(t *testing.T) {
	e := newEnv(t, nil)
	foreign := e.podDir("pod-foreign", "v")
	if err := unix.Mount("tmpfs", foreign, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Run("unmount of a dir holding another filesystem is refused and leaves it", func(t *testing.T) {
		r := e.run("unmount", foreign)
		if r.Status != "Failure" || !strings.Contains(r.Message, "not a drover volume") {
			t.Fatalf("got %s: %s", r.Status, r.Message)
		}
		if m, ok := mountAt(t, foreign); !ok || m.FSType != "tmpfs" {
			t.Errorf("the tmpfs is gone")
		}
	})
	t.Run("mount over a dir holding another filesystem is refused", func(t *testing.T) {
		r := e.run("mount", foreign, kubeletOptions("pv-f", false, "", "", map[string]string{"size": "32Mi"}))
		if r.Status != "Failure" || !strings.Contains(r.Message, "not a drover volume") {
			t.Fatalf("got %s: %s", r.Status, r.Message)
		}
		e.assertReleased("pv-f")
	})
	t.Run("a repeated mount of the same pod dir succeeds without a second mount", func(t *testing.T) {
		pod := e.podDir("pod-twice", "v")
		opts := kubeletOptions("pv-twice", false, "", "", map[string]string{"size": "32Mi"})
		e.mustSucceed("mount", pod, opts)
		e.mustSucceed("mount", pod, opts)
		mounts := 0
		b, _ := os.ReadFile("/proc/self/mountinfo")
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, " "+pod+" ") {
				mounts++
			}
		}
		if mounts != 1 {
			t.Errorf("pod dir has %d mounts, want 1", mounts)
		}
		e.mustSucceed("unmount", pod)
		e.assertReleased("pv-twice")
	})
}
