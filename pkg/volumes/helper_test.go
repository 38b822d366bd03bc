package volumes

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHelpersNeverHoldStdout: the driver finds its helpers in a fixed list
// of system directories, not on kubelet's PATH, so a fake helper cannot be
// slipped in; instead this runs real helpers that print on stdout and
// stderr (mkfs.ext4 without -q, blkid, e2fsck) through runHelper and
// runHelperOutput, the one path every helper takes, with this process's
// file descriptors 1 and 2 pointed at pipes. The helpers' output must reach
// the buffers and nothing may reach the pipes.
func TestHelpersNeverHoldStdout(t *testing.T) {
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	leaked := captureFDs(t, func() {
		ctx := context.Background()
		if err := runHelper(ctx, nil, "mkfs.ext4", "-F", img); err != nil {
			t.Errorf("mkfs.ext4: %v", err)
		}
		out, err := runHelperOutput(ctx, nil, "blkid", "-p", "-o", "export", img)
		if err != nil || !strings.Contains(out, "TYPE=ext4") {
			t.Errorf("blkid's stdout did not reach its buffer: %q %v", out, err)
		}
		out, err = runHelperOutput(ctx, nil, "e2fsck", "-f", "-n", img)
		if err != nil || !strings.Contains(out, "files") {
			t.Errorf("e2fsck's stdout did not reach its buffer: %q %v", out, err)
		}
		// A failing helper: its stderr goes into the error, not to ours.
		if err := runHelper(ctx, nil, "e2fsck", "-n", filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "e2fsck") {
			t.Errorf("failing e2fsck: %v", err)
		}
	})
	if leaked != "" {
		t.Errorf("helpers wrote to the driver's stdout or stderr: %q", leaked)
	}
}

// captureFDs runs f with file descriptors 1 and 2 on a pipe and returns what
// was written there.
func captureFDs(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string)
	go func() { b, _ := io.ReadAll(r); got <- string(b) }()
	var saved [2]int
	for i, fd := range []int{1, 2} {
		if saved[i], err = unix.Dup(fd); err != nil {
			t.Fatal(err)
		}
		if err := unix.Dup2(int(w.Fd()), fd); err != nil {
			t.Fatal(err)
		}
	}
	func() {
		defer func() {
			for i, fd := range []int{1, 2} {
				unix.Dup2(saved[i], fd)
				unix.Close(saved[i])
			}
			w.Close()
		}()
		f()
	}()
	return <-got
}
