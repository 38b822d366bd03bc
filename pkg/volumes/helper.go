package volumes

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
)

// helperPath is where mkfs and friends are looked up: kubelet's own PATH may
// lack the sbin directories.
const helperPath = "/usr/sbin:/usr/bin:/sbin:/bin"

// runHelper runs a filesystem tool. Its stdout and stderr go to a buffer,
// never to ours (stdout belongs to the Flexvolume contract). The child
// inherits the volume's lock descriptor, so an orphaned helper keeps the
// volume locked until it is gone, and it gets SIGKILL when the driver dies
// (Pdeathsig fires when the forking thread exits, hence LockOSThread).
// Arguments go to exec directly: no shell ever sees them.
func runHelper(ctx context.Context, l *lock, name string, args ...string) error {
	path, err := lookHelper(name)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = []string{"PATH=" + helperPath, "LC_ALL=C"}
	cmd.Stdin = nil
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if l != nil && l.f != nil {
		cmd.ExtraFiles = []*os.File{l.f}
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", name, ctx.Err())
		}
		return fmt.Errorf("%s: %w: %s", name, err, lastLine(out.String()))
	}
	return nil
}

func lookHelper(name string) (string, error) {
	for _, dir := range strings.Split(helperPath, ":") {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s (install e2fsprogs/xfsprogs)", name, helperPath)
}

// lastLine keeps error messages to one line a person can read.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// mkfs formats dev with the driver's fixed options. ext4: no reserved
// blocks (a volume is not a root filesystem), lazy init because the sparse
// image reads as zeros anyway. -F/-f only skip the tools' own prompts: the
// caller has already proved the device holds no filesystem (fsprobe).
func mkfs(ctx context.Context, l *lock, fsType, dev string) error {
	switch fsType {
	case FSXFS:
		return runHelper(ctx, l, "mkfs.xfs", "-q", "-f", dev)
	default:
		return runHelper(ctx, l, "mkfs.ext4", MkfsExt4Args(dev)...)
	}
}

// MkfsExt4Args are the mkfs.ext4 arguments the driver uses; the benchmark's
// hand path uses the same ones so the comparison is fair.
func MkfsExt4Args(dev string) []string {
	return []string{"-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", dev}
}
