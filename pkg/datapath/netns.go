package datapath

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNetNSNotFound says the pod's network namespace does not exist: the only
// failure to open one that DEL and CHECK may take for "the pod is gone".
var ErrNetNSNotFound = errors.New("pod network namespace not found")

// ErrNotNetNS says a path exists but is not a network namespace.
var ErrNotNetNS = errors.New("not a network namespace")

// OpenNetNS opens the network namespace at path. A path that does not exist
// is ErrNetNSNotFound (and fs.ErrNotExist); one that is not a network
// namespace is ErrNotNetNS. Any other failure (permission, a symlink loop)
// is returned as it is, so no caller mistakes it for a pod that is gone.
func OpenNetNS(path string) (netns.NsHandle, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return -1, fmt.Errorf("open %s: %w: %w", path, ErrNetNSNotFound, err)
		}
		return -1, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	// The file system type alone does not tell: a /proc file that is not a
	// namespace passes a statfs check, so ask the kernel what the file is.
	typ, err := unix.IoctlRetInt(int(h), unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWNET {
		h.Close()
		if err != nil && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
			return -1, fmt.Errorf("inspect %s: %w", path, err)
		}
		return -1, fmt.Errorf("%s: %w", path, ErrNotNetNS)
	}
	return h, nil
}

// CheckNetNS reports, with OpenNetNS's errors, whether path is a network
// namespace, and keeps nothing open.
func CheckNetNS(path string) error {
	h, err := OpenNetNS(path)
	if err != nil {
		return err
	}
	return h.Close()
}
