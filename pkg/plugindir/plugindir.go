// Package plugindir finds the directory the node's kubelet runs Flexvolume
// drivers from: the running kubelet's --volume-plugin-dir, its config file
// and drop-ins, else the paths distributions are known to use. It only
// reads (procfs and files); the installer copies, the admin command reads
// the driver's config from what it finds. It has no dependencies beyond the
// standard library and a YAML decoder, so small binaries can use it.
package plugindir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// DriverDir is drover/local's directory inside the plugin dir: kubelet
// names a driver vendor~driver and runs the executable named after the
// driver in it (<plugin dir>/drover~local/local).
const DriverDir = "drover~local"

// DefaultPluginDir is kubelet's own default --volume-plugin-dir.
const DefaultPluginDir = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"

// KnownDir is a Flexvolume plugin directory some distribution configures.
type KnownDir struct {
	Path  string
	Where string // the distributions that use it
}

// KnownPluginDirs are tried, in order, when no running kubelet can be read:
// the first that exists on the host wins. The distributions' own paths come
// before kubelet's default because the default directory is often present
// (left by packages) where the kubelet was told to look elsewhere.
var KnownPluginDirs = []KnownDir{
	{"/var/lib/kubelet/volumeplugins", "Rancher RKE, Typhoon, Flatcar/Container Linux setups"},
	{"/etc/kubernetes/volumeplugins", "AKS, acs-engine/aks-engine"},
	{"/home/kubernetes/flexvolume", "GKE on Container-Optimized OS"},
	{"/etc/kubernetes/kubelet-plugins/volume/exec", "OpenShift 4 (RHCOS, read-only /usr)"},
	{"/usr/libexec/k0s/kubelet-plugins/volume/exec", "k0s"},
	{"/opt/libexec/kubernetes/kubelet-plugins/volume/exec", "Flatcar with kubeadm"},
	{DefaultPluginDir, "kubelet default: kubeadm, EKS, k3s, RKE2, MicroK8s, kind"},
}

// Detector finds the Flexvolume plugin directory of the node's kubelet. Its
// roots let a containerised installer (host / mounted at /host) and tests
// (temp directories) look at a host other than the one they run on.
type Detector struct {
	// ProcRoot is where the host's procfs is mounted; default /proc.
	ProcRoot string
	// HostRoot is where the host's / is mounted; default /.
	HostRoot string
}

// Detection is a plugin directory and how it was found.
type Detection struct {
	Dir    string // a host path
	Source string // for the operator reading the installer's log
}

// PluginDir finds the directory: a running kubelet's --volume-plugin-dir,
// else the volumePluginDir of its config file (and drop-ins), else
// kubelet's default when a kubelet runs without either; with no kubelet in
// sight, the first existing known distribution directory, else kubelet's
// default.
func (d Detector) PluginDir() (Detection, error) {
	k, err := d.findKubelet()
	if err != nil {
		return Detection{}, err
	}
	if k != nil {
		return d.fromKubelet(k)
	}
	for _, known := range KnownPluginDirs {
		info, err := os.Stat(d.onHost(known.Path))
		if err == nil && info.IsDir() {
			return Detection{Dir: known.Path, Source: fmt.Sprintf("no kubelet process seen; %s exists (%s)", known.Path, known.Where)}, nil
		}
	}
	return Detection{Dir: DefaultPluginDir, Source: "no kubelet process seen and no known directory exists; kubelet's default"}, nil
}

func (d Detector) procRoot() string {
	if d.ProcRoot == "" {
		return "/proc"
	}
	return d.ProcRoot
}

// onHost maps a host path into this process's view of the host.
func (d Detector) onHost(path string) string {
	if d.HostRoot == "" {
		return path
	}
	return filepath.Join(d.HostRoot, path)
}

// findKubelet returns the running kubelet with the lowest PID, or nil.
func (d Detector) findKubelet() (*kubelet, error) {
	entries, err := os.ReadDir(d.procRoot())
	if err != nil {
		return nil, fmt.Errorf("list processes in %s: %w", d.procRoot(), err)
	}
	var found *kubelet
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		// A process may exit between the listing and the read; a process
		// we may not read is not ours to judge either.
		raw, err := os.ReadFile(filepath.Join(d.procRoot(), e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args, ok := kubeletArgs(splitCmdline(raw))
		if !ok {
			continue
		}
		if found == nil || pid < found.pid {
			found = &kubelet{pid: pid, args: args}
		}
	}
	return found, nil
}

func (d Detector) fromKubelet(k *kubelet) (Detection, error) {
	if dir, ok := lastFlag(k.args, "volume-plugin-dir"); ok && dir != "" {
		return Detection{Dir: d.kubeletAbs(k, dir), Source: fmt.Sprintf("kubelet (pid %d) --volume-plugin-dir", k.pid)}, nil
	}
	dir, src, err := d.fromConfig(k)
	if err != nil {
		return Detection{}, err
	}
	if dir != "" {
		return Detection{Dir: d.kubeletAbs(k, dir), Source: fmt.Sprintf("kubelet (pid %d) %s", k.pid, src)}, nil
	}
	return Detection{Dir: DefaultPluginDir, Source: fmt.Sprintf("kubelet (pid %d) sets no volume plugin dir; its default", k.pid)}, nil
}

// fromConfig reads volumePluginDir from --config, then from the --config-dir
// drop-ins, which override it in lexical order, as kubelet merges them.
func (d Detector) fromConfig(k *kubelet) (dir, src string, err error) {
	if cfg, ok := lastFlag(k.args, "config"); ok && cfg != "" {
		raw, err := d.readKubeletFile(k, cfg)
		if err != nil {
			return "", "", fmt.Errorf("kubelet (pid %d) config: %w", k.pid, err)
		}
		v, err := volumePluginDir(raw)
		if err != nil {
			return "", "", fmt.Errorf("kubelet (pid %d) config %s: %w", k.pid, cfg, err)
		}
		if v != "" {
			dir, src = d.configRelative(k, cfg, v), "config "+cfg
		}
	}
	if drop, ok := lastFlag(k.args, "config-dir"); ok && drop != "" {
		names, err := d.dropIns(k, drop)
		if err != nil {
			return "", "", err
		}
		for _, name := range names {
			p := filepath.Join(drop, name)
			raw, err := d.readKubeletFile(k, p)
			if err != nil {
				return "", "", fmt.Errorf("kubelet (pid %d) drop-in: %w", k.pid, err)
			}
			v, err := volumePluginDir(raw)
			if err != nil {
				return "", "", fmt.Errorf("kubelet (pid %d) drop-in %s: %w", k.pid, p, err)
			}
			if v != "" {
				dir, src = d.configRelative(k, p, v), "config drop-in "+p
			}
		}
	}
	return dir, src, nil
}

// readKubeletFile reads a path as the kubelet sees it: through its root
// and working directory in procfs, so a kubelet in its own mount namespace
// (a containerised kubelet) is read right; then through the host root.
func (d Detector) readKubeletFile(k *kubelet, path string) ([]byte, error) {
	via := filepath.Join(d.procRoot(), strconv.Itoa(k.pid), "root", path)
	if !filepath.IsAbs(path) {
		via = filepath.Join(d.procRoot(), strconv.Itoa(k.pid), "cwd", path)
	}
	raw, err := os.ReadFile(via)
	if err == nil || !filepath.IsAbs(path) {
		return raw, wrapRead(path, err)
	}
	raw, herr := os.ReadFile(d.onHost(path))
	if herr != nil {
		return nil, wrapRead(path, errors.Join(err, herr))
	}
	return raw, nil
}

func wrapRead(path string, err error) error {
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// dropIns lists the *.conf files of a --config-dir, sorted.
func (d Detector) dropIns(k *kubelet, dir string) ([]string, error) {
	via := filepath.Join(d.procRoot(), strconv.Itoa(k.pid), "root", dir)
	if !filepath.IsAbs(dir) {
		via = filepath.Join(d.procRoot(), strconv.Itoa(k.pid), "cwd", dir)
	}
	entries, err := os.ReadDir(via)
	if errors.Is(err, fs.ErrNotExist) && filepath.IsAbs(dir) {
		entries, err = os.ReadDir(d.onHost(dir))
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // kubelet tolerates a missing drop-in directory
	}
	if err != nil {
		return nil, fmt.Errorf("kubelet (pid %d) --config-dir %s: %w", k.pid, dir, err)
	}
	var names []string
	for _, e := range entries { // ReadDir sorts by name
		if !e.IsDir() && filepath.Ext(e.Name()) == ".conf" {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// configRelative resolves a path read from a kubelet config file the way
// kubelet does: relative to the directory of the file that holds it, not
// to kubelet's working directory.
func (d Detector) configRelative(k *kubelet, file, path string) string {
	if filepath.IsAbs(path) {
		return filepath.Clean(path)
	}
	return filepath.Join(filepath.Dir(d.kubeletAbs(k, file)), path)
}

// kubeletAbs resolves a relative path against kubelet's working directory.
func (d Detector) kubeletAbs(k *kubelet, path string) string {
	if filepath.IsAbs(path) {
		return filepath.Clean(path)
	}
	cwd, err := os.Readlink(filepath.Join(d.procRoot(), strconv.Itoa(k.pid), "cwd"))
	if err != nil || !filepath.IsAbs(cwd) {
		cwd = "/"
	}
	return filepath.Join(cwd, path)
}
