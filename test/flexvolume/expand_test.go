package flexvolume_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// onlineExt4Resize says whether this process may grow a mounted ext4
// filesystem: the kernel's resize ioctls need CAP_SYS_RESOURCE, which some
// container and VM roots lack (this repository's CI machine among them).
func onlineExt4Resize() bool {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}

func fsSize(t *testing.T, dir string) int64 {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return int64(fs.Blocks) * fs.Bsize
}

// TestExpand grows volumes through expandfs with kubelet's argv
// (expander.go NodeExpand: json, device path, device mount path, new size,
// old size in bytes) and checks size and data.
func TestExpand(t *testing.T) {
	t.Run("xfs grows online while a pod uses it", func(t *testing.T) {
		e := newEnv(t, nil)
		pod := e.podDir("pod-x", "vol")
		opts := map[string]string{"size": "320Mi"}
		e.mustSucceed("mount", pod, kubeletOptions("pv-xfs", false, "xfs", "", opts))
		if m, _ := mountAt(t, pod); m.FSType != "xfs" {
			t.Fatalf("mounted %q, want xfs", m.FSType)
		}
		writeFileSync(t, filepath.Join(pod, "keep"), []byte("xfs data"))
		before := fsSize(t, pod)
		e.mustSucceed("expandfs", specOptions("pv-xfs", opts), "", pod, strconv.Itoa(640<<20), strconv.Itoa(320<<20))
		if after := fsSize(t, pod); after < before+250<<20 {
			t.Errorf("xfs is %d bytes after expandfs, was %d: want about 320Mi more", after, before)
		}
		if b, _ := os.ReadFile(filepath.Join(pod, "keep")); string(b) != "xfs data" {
			t.Errorf("data after grow: %q", b)
		}
		e.mustSucceed("unmount", pod)
		e.assertReleased("pv-xfs")
	})

	t.Run("ext4 that no pod uses grows offline and the next mount sees it", func(t *testing.T) {
		e := newEnv(t, nil)
		pod := e.podDir("pod-e", "vol")
		opts := map[string]string{"size": "64Mi"}
		e.mustSucceed("mount", pod, kubeletOptions("pv-e", false, "", "", opts))
		writeFileSync(t, filepath.Join(pod, "keep"), []byte("ext4 data"))
		e.mustSucceed("unmount", pod)
		e.mustSucceed("expandfs", specOptions("pv-e", opts), "", pod, strconv.Itoa(256<<20), strconv.Itoa(64<<20))
		e.assertReleased("pv-e")
		e.mustSucceed("mount", pod, kubeletOptions("pv-e", false, "", "", opts))
		if got := fsSize(t, pod); got < 200<<20 {
			t.Errorf("filesystem is %d bytes after expand, want about 256Mi", got)
		}
		if b, _ := os.ReadFile(filepath.Join(pod, "keep")); string(b) != "ext4 data" {
			t.Errorf("data after grow: %q", b)
		}
		e.mustSucceed("unmount", pod)
	})

	t.Run("ext4 in use grows online, or on the next mount without CAP_SYS_RESOURCE", func(t *testing.T) {
		e := newEnv(t, nil)
		pod := e.podDir("pod-o", "vol")
		opts := map[string]string{"size": "64Mi"}
		e.mustSucceed("mount", pod, kubeletOptions("pv-o", false, "", "", opts))
		writeFileSync(t, filepath.Join(pod, "keep"), []byte("online"))
		r := e.run("expandfs", specOptions("pv-o", opts), "", pod, strconv.Itoa(128<<20), strconv.Itoa(64<<20))
		if onlineExt4Resize() {
			if r.Status != "Success" || fsSize(t, pod) < 100<<20 {
				t.Fatalf("online grow: %s %s, size %d", r.Status, r.Message, fsSize(t, pod))
			}
		} else {
			if r.Status != "Failure" || !strings.Contains(r.Message, "CAP_SYS_RESOURCE") {
				t.Fatalf("want a Failure naming CAP_SYS_RESOURCE, got %s: %s", r.Status, r.Message)
			}
			// kubelet retries NodeExpand; after the pod restarts the
			// filesystem has grown and the retry succeeds.
			e.mustSucceed("unmount", pod)
			e.mustSucceed("mount", pod, kubeletOptions("pv-o", false, "", "", opts))
			if got := fsSize(t, pod); got < 100<<20 {
				t.Errorf("filesystem is %d bytes after remount, want about 128Mi", got)
			}
			e.mustSucceed("expandfs", specOptions("pv-o", opts), "", pod, strconv.Itoa(128<<20), strconv.Itoa(64<<20))
		}
		if b, _ := os.ReadFile(filepath.Join(pod, "keep")); string(b) != "online" {
			t.Errorf("data after grow: %q", b)
		}
		r = e.run("expandfs", specOptions("pv-o", opts), "", pod, strconv.Itoa(32<<20), strconv.Itoa(128<<20))
		if r.Status != "Failure" || !strings.Contains(r.Message, "shrink") {
			t.Errorf("shrinking: %s %s, want a Failure", r.Status, r.Message)
		}
		e.mustSucceed("unmount", pod)
		e.assertReleased("pv-o")
	})
}

// TestExpandNeverExceedsMaxSize: sizes are rounded up to 4 KiB, and the
// maximum applies to the rounded size, so a grow to just under an
// unaligned maximum is refused rather than landing a few KiB above it.
func TestExpandNeverExceedsMaxSize(t *testing.T) {
	const maxSize = 64<<20 + 1136 // not a multiple of 4 KiB
	e := newEnv(t, map[string]any{"maxSize": strconv.Itoa(maxSize)})
	pod := e.podDir("pod-m", "vol")
	opts := map[string]string{"size": "32Mi"}
	e.mustSucceed("mount", pod, kubeletOptions("pv-max", false, "", "", opts))
	e.mustSucceed("unmount", pod)
	img := filepath.Join(e.stateDir, "volumes", "pv-max.img")

	r := e.run("expandfs", specOptions("pv-max", opts), "", pod, strconv.Itoa(maxSize-100), strconv.Itoa(32<<20))
	if r.Status != "Failure" || !strings.Contains(r.Message, "above the maximum") {
		t.Errorf("grow to %d (rounds up to %d): %s %s, want a Failure", maxSize-100, (maxSize-100+4095)&^4095, r.Status, r.Message)
	}
	if fi, err := os.Stat(img); err != nil || fi.Size() > maxSize {
		t.Fatalf("image is %d bytes (%v), above the maximum of %d", fi.Size(), err, maxSize)
	}
	// The largest aligned size within the maximum is fine.
	e.mustSucceed("expandfs", specOptions("pv-max", opts), "", pod, strconv.Itoa(64<<20), strconv.Itoa(32<<20))
	if fi, err := os.Stat(img); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("image after the grow: %v, %d bytes, want 64Mi", err, fi.Size())
	}
	e.assertReleased("pv-max")
}
