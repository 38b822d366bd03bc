package volumes

import (
	"bytes"
	"context"
	"errors"
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

// runHelper runs a filesystem tool. Its stdout and stderr go to buffers,
// never to ours (stdout belongs to the Flexvolume contract). The child
// inherits the volume's lock descriptor, so an orphaned helper keeps the
// volume locked until it is gone, and it gets SIGKILL when the driver dies
// (Pdeathsig fires when the forking thread exits, hence LockOSThread), or
// when ctx ends. Arguments go to exec directly: no shell ever sees them.
func runHelper(ctx context.Context, l *lock, name string, args ...string) error {
	_, err := runHelperOutput(ctx, l, name, args...)
	return err
}

// runHelperOutput is runHelper for a tool whose answer is its stdout.
func runHelperOutput(ctx context.Context, l *lock, name string, args ...string) (string, error) {
	path, err := lookHelper(name)
	if err != nil {
		return "", err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = []string{"PATH=" + helperPath, "LC_ALL=C"}
	cmd.Stdin = nil
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if l != nil && l.f != nil {
		cmd.ExtraFiles = []*os.File{l.f}
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return stdout.String(), fmt.Errorf("%s: %w", name, ctx.Err())
		}
		return stdout.String(), fmt.Errorf("%s: %w: %s", name, err, lastLine(stderr.String()+"\n"+stdout.String()))
	}
	return stdout.String(), nil
}

func lookHelper(name string) (string, error) {
	for _, dir := range strings.Split(helperPath, ":") {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s (install e2fsprogs, xfsprogs and util-linux)", name, helperPath)
}

// lastLine keeps error messages to one line a person can read.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// mkfs formats dev with the driver's fixed options. ext4: no reserved
// blocks (a volume is not a root filesystem), lazy init because the sparse
// image reads as zeros anyway. -F/-f only skip the tools' own prompts: the
// caller has already proved the device blank (fsprobe, then checkBlank).
func mkfs(ctx context.Context, l *lock, fsType, dev string) error {
	switch fsType {
	case FSXFS:
		return runHelper(ctx, l, "mkfs.xfs", "-q", "-f", dev)
	default:
		return runHelper(ctx, l, "mkfs.ext4", MkfsExt4Args(dev)...)
	}
}

// checkBlank asks blkid's low-level probe, as kubelet's SafeFormatAndMount
// does, whether dev holds anything it knows: fsprobe's fixed list is only
// the first line, libblkid knows every filesystem, RAID and crypto header
// and partition table there is. Exit code 2 is "nothing found"; anything
// else found (or an ambivalent probe, exit 8) refuses the format. The one
// thing allowed is the xfs superblock of the driver's own interrupted
// mkfs.xfs (interruptedXFS), which blkid reports as xfs.
func checkBlank(ctx context.Context, l *lock, dev string, interruptedXFS bool) error {
	out, err := runHelperOutput(ctx, l, "blkid", "-p", "-s", "TYPE", "-s", "PTTYPE", "-o", "export", dev)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 && ctx.Err() == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("probe %s before formatting: %w", dev, err)
	}
	var found []string
	typ := ""
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		if k == "TYPE" || k == "PTTYPE" {
			found = append(found, k+"="+v)
		}
		if k == "TYPE" {
			typ = v
		}
	}
	if interruptedXFS && len(found) == 1 && typ == FSXFS {
		return nil
	}
	if len(found) == 0 {
		found = []string{"a signature"}
	}
	return fmt.Errorf("blkid finds %s on %s: %w", strings.Join(found, " "), dev, ErrNotBlank)
}

// MkfsExt4Args are the mkfs.ext4 arguments the driver uses; the benchmark's
// hand path uses the same ones so the comparison is fair.
func MkfsExt4Args(dev string) []string {
	return []string{"-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", dev}
}
