package flexvolume_test

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-net/drover/pkg/fsprobe"
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
	// Signatures the driver's own fixed list (fsprobe) does not know:
	// blkid's low-level probe must stop the format, and nothing may be
	// written to the image.
	for _, c := range []struct {
		name, vol, found string
		write            func(t *testing.T, img string, size int64)
	}{
		{"an image holding a DOS partition table is refused and left untouched", "pv-mbr", "PTTYPE=dos", writeMBR},
		{"an image holding a FAT16 filesystem is refused and left untouched", "pv-fat", "TYPE=vfat", writeFAT16},
	} {
		t.Run(c.name, func(t *testing.T) {
			pod := e.podDir("pod-"+c.vol, "v")
			img := filepath.Join(e.stateDir, "volumes", c.vol+".img")
			c.write(t, img, 64<<20)
			if got, err := fsprobe.Device(img); err != nil || got != fsprobe.None {
				t.Fatalf("fsprobe finds %q (%v): this case must be one only blkid knows", got, err)
			}
			before := fileDigest(t, img)
			r := e.run("mount", pod, kubeletOptions(c.vol, false, "", "", map[string]string{"size": "64Mi"}))
			if r.Status != "Failure" || !strings.Contains(r.Message, "refusing to format") || !strings.Contains(r.Message, c.found) {
				t.Fatalf("got %s: %s; want a Failure naming %s and refusing to format", r.Status, r.Message, c.found)
			}
			if fileDigest(t, img) != before {
				t.Errorf("the refused image was written to")
			}
			if _, ok := mountAt(t, pod); ok {
				t.Errorf("pod dir mounted after a refused mount")
			}
			e.assertReleased(c.vol)
			// Still refused on the retry kubelet makes.
			if r := e.run("mount", pod, kubeletOptions(c.vol, false, "", "", nil)); r.Status != "Failure" || fileDigest(t, img) != before {
				t.Errorf("retry: %s %s, image unchanged %v", r.Status, r.Message, fileDigest(t, img) == before)
			}
		})
	}
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

// writeMBR makes an image of size bytes whose first sector is a DOS
// partition table with one Linux partition, as fdisk writes it.
func writeMBR(t *testing.T, img string, size int64) {
	t.Helper()
	mbr := make([]byte, 512)
	entry := mbr[446:462]
	entry[4] = 0x83 // Linux
	binary.LittleEndian.PutUint32(entry[8:], 2048)
	binary.LittleEndian.PutUint32(entry[12:], uint32(size/512-2048))
	mbr[510], mbr[511] = 0x55, 0xaa
	writeImage(t, img, size, map[int64][]byte{0: mbr})
}

// writeFAT16 makes an image of size bytes holding an empty FAT16
// filesystem: boot sector with its BIOS parameter block, and two FATs whose
// first entries carry the media byte, as mkfs.fat lays them out.
func writeFAT16(t *testing.T, img string, size int64) {
	t.Helper()
	const reserved, sectorsPerFAT = 4, 128
	bs := make([]byte, 512)
	copy(bs, "\xeb\x3c\x90MSDOS5.0")
	binary.LittleEndian.PutUint16(bs[11:], 512)           // bytes per sector
	bs[13] = 4                                            // sectors per cluster
	binary.LittleEndian.PutUint16(bs[14:], reserved)      // reserved sectors
	bs[16] = 2                                            // FATs
	binary.LittleEndian.PutUint16(bs[17:], 512)           // root entries
	bs[21] = 0xf8                                         // media: fixed disk
	binary.LittleEndian.PutUint16(bs[22:], sectorsPerFAT) // sectors per FAT
	binary.LittleEndian.PutUint16(bs[24:], 32)            // sectors per track
	binary.LittleEndian.PutUint16(bs[26:], 64)            // heads
	binary.LittleEndian.PutUint32(bs[32:], uint32(size/512))
	bs[36], bs[38] = 0x80, 0x29 // drive number, extended boot signature
	binary.LittleEndian.PutUint32(bs[39:], 0x12345678)
	copy(bs[43:], "NO NAME    FAT16   ")
	bs[510], bs[511] = 0x55, 0xaa
	fat := []byte{0xf8, 0xff, 0xff, 0xff}
	writeImage(t, img, size, map[int64][]byte{
		0: bs, reserved * 512: fat, (reserved + sectorsPerFAT) * 512: fat,
	})
}

// writeImage creates a sparse image of size bytes with the given content at
// the given offsets.
func writeImage(t *testing.T, img string, size int64, at map[int64][]byte) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range at {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
