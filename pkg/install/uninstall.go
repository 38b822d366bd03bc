package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"

	"github.com/drover-net/drover/pkg/cniconf"
	"github.com/drover-net/drover/pkg/cniplugin"
	"github.com/drover-net/drover/pkg/kube"
	"github.com/drover-net/drover/pkg/masq"
	"github.com/drover-net/drover/pkg/nodestate"
	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

// UninstallOptions says what to remove. Host paths are as the host sees
// them; the network pieces are removed in the caller's network namespace.
type UninstallOptions struct {
	Options
	CNIConfDir  string // default /etc/cni/net.d
	CNIConfName string // default cniconf.DefaultName
	RunDir      string // removed whole; default /run/drover
	LogDir      string // the Flexvolume driver's log; default /var/log/drover
	// StateFile and IPAMDir are droverd run's --state-file and --ipam-dir.
	// Where they lie outside RunDir, only drover's own files there go: the
	// state file, the peer cache beside it and the network's IPAM store.
	StateFile string // default nodestate.DefaultPath
	IPAMDir   string // the plugin's dataDir; default cniplugin.DefaultDataDir
	// Kube and NodeName: drover's annotations are removed from the node
	// when both are set.
	Kube     kubernetes.Interface
	NodeName string
}

// Step is one thing Uninstall removed (or found already gone).
type Step struct {
	What string
	Err  error
}

// Uninstall takes drover off the node: the conflist first, so the runtime
// stops calling the plugin, then the executables, drover's iptables chains,
// routes, VXLAN device and bridge, the node state, IPAM store and logs
// (wherever droverd run was told to keep them), and drover's annotations
// on the Node. Every step runs even when an earlier one fails; the error
// joins the failures. Everything missing counts as removed, so running it
// twice is fine. Volume data, under DefaultStateDir, is never touched:
// deleting volumes is the operator's decision (drover-volumes delete).
func Uninstall(ctx context.Context, o UninstallOptions) ([]Step, error) {
	o.Options = o.withDefaults()
	if o.CNIConfDir == "" {
		o.CNIConfDir = "/etc/cni/net.d"
	}
	if o.CNIConfName == "" {
		o.CNIConfName = cniconf.DefaultName
	}
	if o.RunDir == "" {
		o.RunDir = "/run/drover"
	}
	if o.LogDir == "" {
		o.LogDir = "/var/log/drover"
	}
	if o.StateFile == "" {
		o.StateFile = nodestate.DefaultPath
	}
	if o.IPAMDir == "" {
		o.IPAMDir = cniplugin.DefaultDataDir
	}
	store := filepath.Join(o.IPAMDir, cniconf.NetworkName)
	for _, p := range []string{o.CNIConfDir, o.RunDir, o.LogDir, o.CNIBinDir, o.StateFile, o.IPAMDir, store} {
		if err := safeToRemove(p); err != nil {
			return nil, err
		}
	}
	// These two go whole: a mistyped flag must not take /run or /var/log.
	for _, p := range []string{o.RunDir, o.LogDir} {
		if !strings.Contains(filepath.Base(filepath.Clean(p)), "drover") {
			return nil, fmt.Errorf("uninstall: refusing to remove %s as a whole: only a directory of drover's own (its name says drover) goes", p)
		}
	}
	if err := o.usableStatePaths(); err != nil {
		return nil, err
	}
	var steps []Step
	do := func(what string, f func() error) { steps = append(steps, Step{What: what, Err: f()}) }
	conf := filepath.Join(o.CNIConfDir, o.CNIConfName)
	do("conflist "+conf, func() error { return cniconf.Remove(o.onHost(conf)) })
	cniBin := filepath.Join(o.CNIBinDir, CNIPlugin)
	do("CNI plugin "+cniBin, func() error { return removeWithTemporaries(o.onHost(cniBin)) })
	// A plugin dir that cannot be found fails this step only: the rest of
	// the node is still cleaned.
	if det, err := o.pluginDir(); err != nil {
		do("Flexvolume driver", func() error {
			return fmt.Errorf("find the Flexvolume plugin dir (set it with --plugin-dir): %w", err)
		})
	} else {
		flex := filepath.Join(det.Dir, FlexDriverDir)
		do("Flexvolume driver "+flex+" ("+det.Source+")", func() error { return removeTree(o.onHost(flex)) })
	}
	do("iptables chains "+masq.NATChain+", "+masq.ForwardChain, removeChains)
	do("overlay routes", overlay.RemoveRoutes)
	do("VXLAN device "+vxlan.DefaultName, func() error { return vxlan.Delete(vxlan.DefaultName) })
	do("bridge "+cniplugin.DefaultBridge, func() error { return deleteLink(cniplugin.DefaultBridge) })
	// What lies inside RunDir goes with it; listing it again would only
	// repeat the step.
	if !within(o.StateFile, o.RunDir) {
		peers := filepath.Join(filepath.Dir(o.StateFile), nodestate.PeerCacheName)
		do("node state "+o.StateFile+" and peer cache "+peers, func() error {
			return errors.Join(removeWithTemporaries(o.onHost(o.StateFile)), removeWithTemporaries(o.onHost(peers)))
		})
	}
	if !within(store, o.RunDir) {
		// An IPAM dir left empty goes too, unless it is one of the host's
		// directories that uninstall keeps.
		keepRoot := false
		for _, d := range []string{o.CNIConfDir, o.CNIBinDir, o.PluginDir} {
			keepRoot = keepRoot || d != "" && filepath.Clean(d) == filepath.Clean(o.IPAMDir)
		}
		do("IPAM store "+store, func() error { return removeStore(o.onHost(store), keepRoot) })
	}
	do("node state and IPAM store "+o.RunDir, func() error { return removeTree(o.onHost(o.RunDir)) })
	do("logs "+o.LogDir, func() error { return removeTree(o.onHost(o.LogDir)) })
	if o.Kube != nil && o.NodeName != "" {
		do("annotations of node "+o.NodeName, func() error { return kube.RemoveAnnotations(ctx, o.Kube, o.NodeName) })
	}

	var errs []error
	for _, s := range steps {
		if s.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.What, s.Err))
		}
	}
	return steps, errors.Join(errs...)
}

// safeToRemove refuses a directory that holds or lies inside the volume
// data, whatever the flags say.
func safeToRemove(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("uninstall: %q is not an absolute host path", p)
	}
	p = filepath.Clean(p)
	if p == "/" || p == DefaultStateDir || strings.HasPrefix(DefaultStateDir, p+"/") || strings.HasPrefix(p, DefaultStateDir+"/") {
		return fmt.Errorf("uninstall: refusing to remove %s: it holds drover's volume data (%s)", p, DefaultStateDir)
	}
	return nil
}

// usableStatePaths refuses, before anything is removed, a state file that
// is a directory and an IPAM dir that is not one: a flag naming the wrong
// thing, since droverd run could not have written there.
func (o UninstallOptions) usableStatePaths() error {
	fi, err := os.Lstat(o.onHost(o.StateFile))
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("uninstall: state file %s is a directory, not droverd's node state file", o.StateFile)
	case err != nil && !missing(err):
		return fmt.Errorf("uninstall: check state file %s: %w", o.StateFile, err)
	}
	fi, err = os.Stat(o.onHost(o.IPAMDir))
	switch {
	case err == nil && !fi.IsDir():
		return fmt.Errorf("uninstall: IPAM dir %s is not a directory", o.IPAMDir)
	case err != nil && !missing(err):
		return fmt.Errorf("uninstall: check IPAM dir %s: %w", o.IPAMDir, err)
	}
	return nil
}

// missing says a path does not exist, or cannot, as one of its parents is
// a file.
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// within reports whether path is dir or lies inside it.
func within(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// removeStore removes the network's IPAM store and then, unless keepRoot,
// the IPAM dir holding it if nothing else is left there.
func removeStore(store string, keepRoot bool) error {
	// A symlink goes itself: what it points to is not known to be drover's.
	if fi, err := os.Lstat(store); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if err := os.Remove(store); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", store, err)
		}
	} else if err := removeTree(store); err != nil {
		return err
	}
	if keepRoot {
		return nil
	}
	root := filepath.Dir(store)
	err := os.Remove(root)
	if err == nil || missing(err) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.EBUSY) {
		return nil
	}
	return fmt.Errorf("remove %s: %w", root, err)
}

// removeChains removes drover's chains and the jumps to them. The cluster
// CIDR only shapes the rules inside the chains, which go whole, so any
// value serves.
func removeChains() error {
	r, err := masq.New(&net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)})
	if err != nil {
		return err
	}
	return r.Remove()
}

// deleteLink deletes a link by name; missing is fine.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// removeTree removes a directory and its content. A directory that is a
// mount point (a hostPath volume) cannot go itself; its content does.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", e.Name(), err))
		}
	}
	err = os.Remove(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.EBUSY) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return errors.Join(errs...)
}
