// Package install puts drover's node executables where their callers look
// for them and takes drover off a node again: the CNI plugin into the CNI
// bin dir, the Flexvolume driver into kubelet's volume plugin dir (found
// from the running kubelet or the distributions' known paths), copied
// atomically so a runtime or kubelet exec never sees a partial file.
//
// It is what `droverd install` and `droverd uninstall` run. It does not
// write the CNI conflist (the agent does, once its node is ready) and never
// touches volume data.
package install

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drover-net/drover/pkg/plugindir"
)

// Names of the installed executables, as the CNI and Flexvolume contracts
// find them.
const (
	CNIPlugin       = "drover"            // <cni-bin-dir>/drover, CNI type "drover"
	FlexDriverDir   = plugindir.DriverDir // vendor~driver directory of drover/local
	FlexDriver      = "local"             // the executable inside it
	DefaultCNIBin   = "/opt/cni/bin"
	DefaultStateDir = "/var/lib/drover" // the volume driver's data: never removed
)

// Options says where the sources are and where the host's directories are.
// Host paths (CNIBinDir, PluginDir) are as the host sees them; HostRoot is
// where the host's / is mounted in this process's view.
type Options struct {
	SourceDir string // holds the drover and local executables
	HostRoot  string // default /
	ProcRoot  string // the host's procfs; default HostRoot/proc
	CNIBinDir string // default /opt/cni/bin
	PluginDir string // empty: detect
}

// File is one installed executable.
type File struct {
	Src, Dst string // Dst is a host path
	Changed  bool   // false: it was already there, identical
}

// Result is what Install did.
type Result struct {
	PluginDir plugindir.Detection
	Files     []File
}

func (o Options) withDefaults() Options {
	if o.HostRoot == "" {
		o.HostRoot = "/"
	}
	if o.ProcRoot == "" {
		o.ProcRoot = filepath.Join(o.HostRoot, "proc")
	}
	if o.CNIBinDir == "" {
		o.CNIBinDir = DefaultCNIBin
	}
	return o
}

// onHost maps a host path into this process's view.
func (o Options) onHost(path string) string { return filepath.Join(o.HostRoot, path) }

// pluginDir is the flag's directory, else the detected one.
func (o Options) pluginDir() (plugindir.Detection, error) {
	if o.PluginDir != "" {
		return plugindir.Detection{Dir: filepath.Clean(o.PluginDir), Source: "set by flag"}, nil
	}
	return plugindir.Detector{ProcRoot: o.ProcRoot, HostRoot: o.HostRoot}.PluginDir()
}

// Install copies the CNI plugin and the Flexvolume driver onto the host.
// Both copies are atomic and skipped when the target is already identical,
// so an init container that runs on every pod start rewrites nothing.
func Install(o Options) (Result, error) {
	o = o.withDefaults()
	var res Result
	if o.SourceDir == "" {
		return res, errors.New("install: no source directory")
	}
	for _, p := range []string{o.CNIBinDir, o.PluginDir} {
		if p != "" && !filepath.IsAbs(p) {
			return res, fmt.Errorf("install: %q is not an absolute host path", p)
		}
	}
	det, err := o.pluginDir()
	if err != nil {
		return res, fmt.Errorf("find the Flexvolume plugin dir (set it with --plugin-dir): %w", err)
	}
	res.PluginDir = det
	for _, f := range []File{
		{Src: filepath.Join(o.SourceDir, CNIPlugin), Dst: filepath.Join(o.CNIBinDir, CNIPlugin)},
		{Src: filepath.Join(o.SourceDir, FlexDriver), Dst: filepath.Join(det.Dir, FlexDriverDir, FlexDriver)},
	} {
		f.Changed, err = CopyFile(f.Src, o.onHost(f.Dst))
		if err != nil {
			return res, fmt.Errorf("install %s: %w", f.Dst, err)
		}
		res.Files = append(res.Files, f)
	}
	return res, nil
}

// removeWithTemporaries deletes a file written by a temp-and-rename (an
// installed executable, or droverd's node state and peer cache, which name
// their temp files the same way: .<name>.tmp-*) and any temp files an
// interrupted writer left beside it; missing is fine. The directory stays.
func removeWithTemporaries(path string) error {
	dir, base := filepath.Dir(path), filepath.Base(path)
	var errs []error
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if isTemp(e.Name(), base) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", e.Name(), err))
			}
		}
	}
	return errors.Join(errs...)
}
