// Package loopdev attaches, finds, resizes and detaches Linux loop devices
// through the kernel's loop ioctls (/dev/loop-control, LOOP_CONFIGURE), so
// the Flexvolume driver never shells out to losetup.
//
// Design note: every device is attached with LO_FLAGS_AUTOCLEAR. The kernel
// then frees the device on its last close, which is what makes a crash safe:
// a driver killed after attach but before mount closes its descriptor on exit
// and the device disappears; once mounted, the mount holds the device and the
// final umount frees it. Detach is still offered for devices attached without
// autoclear (by hand or by an older version).
//
// It is not a general losetup: no offsets, no partitions, no encryption.
package loopdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotFound says no loop device is bound to the file (or the device is
// already free): callers that tear down treat it as "already gone".
var ErrNotFound = errors.New("loop device not found")

// sysBlock and devDir are variables so tests can point them elsewhere.
var (
	sysBlock    = "/sys/block"
	devDir      = "/dev"
	controlPath = "/dev/loop-control"
)

// Device is an attached loop device whose descriptor the caller holds. While
// it is open the autoclear device stays bound; Close releases it (and frees
// the device if nothing else, such as a mount, holds it).
type Device struct {
	Path string
	file *os.File
}

// Close drops the caller's hold on the device.
func (d *Device) Close() error {
	if d.file == nil {
		return nil
	}
	err := d.file.Close()
	d.file = nil
	return err
}

// Fd returns the open device descriptor (for ioctls while it is held).
func (d *Device) Fd() uintptr { return d.file.Fd() }

// Attach binds the file at path to a free loop device and returns it open.
// LOOP_CTL_GET_FREE only proposes a free index: another process may bind it
// first, so a busy answer means "ask again", up to a bounded number of tries.
func Attach(path string, readOnly bool) (*Device, error) {
	flags := os.O_RDWR
	if readOnly {
		flags = os.O_RDONLY
	}
	backing, err := os.OpenFile(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open backing file %s: %w", path, err)
	}
	defer backing.Close() // the kernel keeps its own reference once bound

	ctl, err := os.OpenFile(controlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", controlPath, err)
	}
	defer ctl.Close()

	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("absolute path of %s: %w", path, err)
	}
	var lastErr error
	for attempt := 0; attempt < 64; attempt++ {
		idx, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		devPath := filepath.Join(devDir, "loop"+strconv.Itoa(idx))
		dev, err := openDevice(devPath, flags)
		if err != nil {
			lastErr = err
			time.Sleep(time.Millisecond)
			continue
		}
		err = configure(dev, backing, abs, readOnly)
		if err == nil {
			return &Device{Path: devPath, file: dev}, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("bind %s to %s: %w", path, devPath, err)
		}
		lastErr = err // another process won the race for this index
	}
	return nil, fmt.Errorf("bind %s: no free loop device after retries: %w", path, lastErr)
}

// openDevice opens a loop node, waiting briefly for udev-less systems where
// the node appears a moment after LOOP_CTL_GET_FREE creates the device.
func openDevice(devPath string, flags int) (*os.File, error) {
	var err error
	for i := 0; i < 50; i++ {
		var f *os.File
		f, err = os.OpenFile(devPath, flags|unix.O_CLOEXEC, 0)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil, fmt.Errorf("open %s: %w", devPath, err)
}

// configure binds backing to dev in one LOOP_CONFIGURE call (Linux 5.8+),
// which sets fd, flags and name atomically; older kernels get LOOP_SET_FD
// followed by LOOP_SET_STATUS64, undone if the second step fails.
func configure(dev, backing *os.File, name string, readOnly bool) error {
	var info unix.LoopInfo64
	info.Flags = unix.LO_FLAGS_AUTOCLEAR
	if readOnly {
		info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	copy(info.File_name[:len(info.File_name)-1], name)
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Info: info}
	err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
	if err == nil || !(errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)) {
		return err
	}
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(int(dev.Fd()), &info); err != nil {
		_ = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// Find returns the loop device bound to the file at path, or ErrNotFound.
// It reads sysfs, so it needs no open device and cannot disturb one.
func Find(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("absolute path of %s: %w", path, err)
	}
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", sysBlock, err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		b, err := BackingFile(e.Name())
		if err != nil {
			continue
		}
		if b == abs {
			return filepath.Join(devDir, e.Name()), nil
		}
	}
	return "", fmt.Errorf("%s: %w", path, ErrNotFound)
}

// BackingFile returns the file bound to the named device ("loop3" or
// "/dev/loop3"), or ErrNotFound when the device is free.
func BackingFile(dev string) (string, error) {
	name := filepath.Base(dev)
	b, err := os.ReadFile(filepath.Join(sysBlock, name, "loop", "backing_file"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return "", fmt.Errorf("read backing file of %s: %w", name, err)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// ByDevNumber names the loop device with the given major:minor, or
// ErrNotFound when it is not a bound loop device.
func ByDevNumber(major, minor uint32) (string, error) {
	link := fmt.Sprintf("/sys/dev/block/%d:%d", major, minor)
	target, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("%d:%d: %w", major, minor, ErrNotFound)
	}
	name := filepath.Base(target)
	if !strings.HasPrefix(name, "loop") {
		return "", fmt.Errorf("%d:%d is %s: %w", major, minor, name, ErrNotFound)
	}
	return filepath.Join(devDir, name), nil
}

// Open holds an already bound device (see Device).
func Open(devPath string) (*Device, error) {
	f, err := os.OpenFile(devPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", devPath, err)
	}
	if _, err := unix.IoctlLoopGetStatus64(int(f.Fd())); err != nil {
		f.Close()
		if errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("%s: %w", devPath, ErrNotFound)
		}
		return nil, fmt.Errorf("LOOP_GET_STATUS64 %s: %w", devPath, err)
	}
	return &Device{Path: devPath, file: f}, nil
}

// DetachFile unbinds devPath if, and only if, it is still bound to the file
// at backing: a device freed by autoclear may already have been given to
// another image by another process, and that one must not be touched. The
// check and the unbind use one open descriptor, which also keeps autoclear
// from freeing and recycling the device in between. A device that is free
// or bound elsewhere answers ErrNotFound; a device still in use is set to
// autoclear by the kernel and freed on its last close.
func DetachFile(devPath, backing string) error {
	f, err := os.OpenFile(devPath, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", devPath, ErrNotFound)
		}
		return fmt.Errorf("open %s: %w", devPath, err)
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		if errors.Is(err, unix.ENXIO) {
			return fmt.Errorf("%s: %w", devPath, ErrNotFound)
		}
		return fmt.Errorf("LOOP_GET_STATUS64 %s: %w", devPath, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(backing, &st); err != nil {
		return fmt.Errorf("stat %s: %w", backing, err)
	}
	if info.Inode != st.Ino || info.Device != st.Dev {
		return fmt.Errorf("%s is bound to another file: %w", devPath, ErrNotFound)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
		if errors.Is(err, unix.ENXIO) {
			return fmt.Errorf("%s: %w", devPath, ErrNotFound)
		}
		return fmt.Errorf("LOOP_CLR_FD %s: %w", devPath, err)
	}
	return nil
}

// SetCapacity makes the device pick up a grown backing file.
func SetCapacity(devPath string) error {
	f, err := os.OpenFile(devPath, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", devPath, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", devPath, err)
	}
	return nil
}
