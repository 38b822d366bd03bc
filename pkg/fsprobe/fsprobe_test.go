package fsprobe

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestBytes(t *testing.T) {
	at := func(off int, magic string) []byte {
		b := make([]byte, probeSize)
		copy(b[off:], magic)
		return b
	}
	xfsInProgress := at(0, "XFSB")
	xfsInProgress[126] = 1 // sb_inprogress
	xfsLaterField := at(0, "XFSB")
	xfsLaterField[0xc8] = 1 // sb_features2's first byte: not the in-progress flag
	cases := []struct {
		name string
		buf  []byte
		want string
	}{
		{"zeros are empty", make([]byte, probeSize), None},
		{"a short device is empty", make([]byte, 100), None},
		{"the ext magic is ext4", at(0x438, "\x53\xef"), Ext4},
		{"XFSB is xfs", at(0, "XFSB"), XFS},
		{"an xfs mkfs that never finished is an interrupted format", xfsInProgress, XFSIncomplete},
		{"a byte past sb_inprogress does not make xfs incomplete", xfsLaterField, XFS},
		{"btrfs is found and blocks formatting", at(0x10040, "_BHRfS_M"), "btrfs"},
		{"LUKS is found and blocks formatting", at(0, "LUKS\xba\xbe"), "LUKS"},
		{"swap is found", at(4096-10, "SWAPSPACE2"), "swap"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Bytes(c.buf); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// sparseImage makes an image file of size bytes in a test temp dir.
func sparseImage(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	return img
}

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s (is it installed? scripts/setup.sh installs it)", argv[0], err, out)
	}
}

// TestDeviceOnRealFilesystems formats image files with the real tools.
func TestDeviceOnRealFilesystems(t *testing.T) {
	for _, c := range []struct {
		fs   string
		mkfs []string
		size int64
	}{
		{Ext4, []string{"mkfs.ext4", "-q", "-F"}, 32 << 20},
		{XFS, []string{"mkfs.xfs", "-q", "-f"}, 300 << 20},
	} {
		t.Run(c.fs, func(t *testing.T) {
			img := sparseImage(t, c.size)
			if got, err := Device(img); err != nil || got != None {
				t.Fatalf("fresh image: %q %v", got, err)
			}
			run(t, append(c.mkfs, img)...)
			if got, err := Device(img); err != nil || got != c.fs {
				t.Fatalf("formatted image: %q %v, want %s", got, err, c.fs)
			}
		})
	}
}

// TestXFSInProgressOnARealImage checks the superblock layout the probe
// relies on against what mkfs.xfs really writes: sb_blocklog (offset 120)
// is log2 of sb_blocksize (offset 4), sb_inprogress (offset 126) is 0 once
// mkfs finished, and the same image with that byte set reads as a format
// that never finished.
func TestXFSInProgressOnARealImage(t *testing.T) {
	img := sparseImage(t, 300<<20)
	run(t, "mkfs.xfs", "-q", "-f", img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	blocksize := uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7])
	if blocksize == 0 || 1<<b[120] != blocksize {
		t.Fatalf("sb_blocklog at 120 is %d for a block size of %d: the layout is not the one the probe assumes", b[120], blocksize)
	}
	if b[xfsInProgressOffset] != 0 {
		t.Fatalf("byte %d of a finished mkfs.xfs is %d, want 0 (sb_inprogress)", xfsInProgressOffset, b[xfsInProgressOffset])
	}
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1}, 126); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, err := Device(img); err != nil || got != XFSIncomplete {
		t.Fatalf("xfs image with sb_inprogress set: %q %v, want %q", got, err, XFSIncomplete)
	}
}
