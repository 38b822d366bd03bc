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
	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

// UninstallOptions says what to remove. Host paths are as the host sees
// them; the network pieces are removed in the caller's network namespace.
type UninstallOptions struct {
	Options
	CNIConfDir  string // default /etc/cni/net.d
	CNIConfName string // default cniconf.DefaultName
	RunDir      string // node state and IPAM store; default /run/drover
	LogDir      string // the Flexvolume driver's log; default /var/log/drover
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
// routes, VXLAN device and bridge, the node state, IPAM store and logs,
// and drover's annotations on the Node. Every step runs even when an
// earlier one fails; the error joins the failures. Everything missing
// counts as removed, so running it twice is fine. Volume data, under
// DefaultStateDir, is never touched: deleting volumes is the operator's
// decision (drover-volumes delete).
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
	for _, p := range []string{o.CNIConfDir, o.RunDir, o.LogDir, o.CNIBinDir} {
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
	var steps []Step
	do := func(what string, f func() error) { steps = append(steps, Step{What: what, Err: f()}) }
	conf := filepath.Join(o.CNIConfDir, o.CNIConfName)
	do("conflist "+conf, func() error { return cniconf.Remove(o.onHost(conf)) })
	cniBin := filepath.Join(o.CNIBinDir, CNIPlugin)
	do("CNI plugin "+cniBin, func() error { return removeExecutable(o.onHost(cniBin)) })
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
