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
	xfsInProgress[xfsInProgressOffset] = 1
	cases := []struct {
		name string
		buf  []byte
		want string
	}{
		{"zeros are empty", make([]byte, probeSize), None},
		{"a short device is empty", make([]byte, 100), None},
		{"the ext magic is ext4", at(0x438, "\x53\xef"), Ext4},
		{"XFSB is xfs", at(0, "XFSB"), XFS},
		{"an xfs mkfs that never finished is not a filesystem", xfsInProgress, None},
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
			img := filepath.Join(t.TempDir(), "img")
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, c.size); err != nil {
				t.Fatal(err)
			}
			if got, err := Device(img); err != nil || got != None {
				t.Fatalf("fresh image: %q %v", got, err)
			}
			if out, err := exec.Command(c.mkfs[0], append(c.mkfs[1:], img)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s (is %s installed? scripts/setup.sh installs it)", c.mkfs[0], err, out, c.mkfs[0])
			}
			if got, err := Device(img); err != nil || got != c.fs {
				t.Fatalf("formatted image: %q %v, want %s", got, err, c.fs)
			}
		})
	}
}
