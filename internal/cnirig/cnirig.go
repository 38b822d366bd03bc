// Package cnirig assembles what drover's CNI contract tests and CNI benchmark
// run plugins with: the drover binary built from this module, the reference
// plugins and cnitool that scripts/setup.sh builds, one CNI_PATH directory
// holding both, and network configuration lists. It creates no namespace and
// runs no plugin: the callers do that inside namespaces they own.
package cnirig

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
)

// SetupCommand is what an operator runs to get the reference plugins.
const SetupCommand = "bash scripts/setup.sh (as root, from the repository root)"

// RefPlugins are the reference binaries the tests and the benchmark use.
var RefPlugins = []string{"bridge", "host-local", "loopback", "portmap", "bandwidth", "cnitool"}

// RefPluginsDir is where scripts/setup.sh puts the reference plugins; it
// mirrors scripts/env.sh so a test run without that script finds them too.
func RefPluginsDir() string {
	if d := os.Getenv("DROVER_REF_PLUGINS"); d != "" {
		return d
	}
	cache := os.Getenv("DROVER_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			base = filepath.Join(os.Getenv("HOME"), ".cache")
		}
		cache = filepath.Join(base, "drover")
	}
	return filepath.Join(cache, "cni-plugins-v1.10.0")
}

// CheckRefPlugins reports, naming the set-up command, which reference
// binaries are missing from dir.
func CheckRefPlugins(dir string) error {
	var missing []string
	for _, name := range RefPlugins {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("reference CNI plugins %v missing from %s: run %s", missing, dir, SetupCommand)
	}
	return nil
}

// BuildDrover builds the drover plugin into dst exactly as `make build`
// does, so the contract is tested on the binary that ships.
func BuildDrover(dst string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", dst, "github.com/drover-net/drover/plugins/drover")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build ./plugins/drover: %w\n%s", err, out)
	}
	return nil
}

// ComposePath fills dir with symlinks to the drover binary and every
// reference plugin, so one CNI_PATH entry serves every conflist.
func ComposePath(dir, droverBin, refDir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create CNI_PATH dir: %w", err)
	}
	links := map[string]string{"drover": droverBin}
	for _, name := range RefPlugins {
		links[name] = filepath.Join(refDir, name)
	}
	for name, target := range links {
		err := os.Symlink(target, filepath.Join(dir, name))
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("link %s into CNI_PATH: %w", name, err)
		}
	}
	return nil
}

// Plugin is one entry of a conflist's "plugins" array.
type Plugin map[string]any

// Drover is the drover plugin's entry for a standalone node: podCIDR in the
// config, store and node state under the given temporary paths.
func Drover(podCIDR, dataDir, nodeState string) Plugin {
	return Plugin{
		"type":         "drover",
		"podCIDR":      podCIDR,
		"dataDir":      dataDir,
		"nodeState":    nodeState,
		"capabilities": map[string]bool{"ips": true, "mac": true},
	}
}

// Portmap is the reference portmap plugin, fed by the portMappings
// capability as kubelet feeds it hostPort.
func Portmap() Plugin {
	return Plugin{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}}
}

// Bandwidth is the reference bandwidth plugin, fed by the bandwidth
// capability as kubelet feeds it the pod's bandwidth annotations.
func Bandwidth() Plugin {
	return Plugin{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}}
}

// RefBridge is the reference bridge plugin with host-local IPAM: the
// baseline drover is measured against. ipMasq gives its pods what drover's
// get from droverd's one rule per node: masquerade for traffic leaving the
// cluster; the bridge plugin makes it per pod, on every ADD and DEL.
func RefBridge(bridge, subnet, dataDir string, ipMasq bool) Plugin {
	return Plugin{
		"type":        "bridge",
		"bridge":      bridge,
		"isGateway":   true,
		"ipMasq":      ipMasq,
		"hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"subnet":  subnet,
			"dataDir": dataDir,
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
		},
	}
}

// Loopback is the reference loopback plugin: the cheapest possible plugin,
// so a chain of it alone measures exec and libcni overhead.
func Loopback() Plugin { return Plugin{"type": "loopback"} }

// List renders a conflist and parses it as a runtime would.
func List(name, cniVersion string, plugins ...Plugin) ([]byte, *libcni.NetworkConfigList, error) {
	raw, err := json.MarshalIndent(map[string]any{
		"cniVersion": cniVersion,
		"name":       name,
		"plugins":    plugins,
	}, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("encode conflist %s: %w", name, err)
	}
	list, err := libcni.NetworkConfFromBytes(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("parse conflist %s: %w", name, err)
	}
	return raw, list, nil
}
