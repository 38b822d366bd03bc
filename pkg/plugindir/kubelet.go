package plugindir

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// kubelet is a running kubelet: its PID and its kubelet flags.
type kubelet struct {
	pid  int
	args []string
}

// splitCmdline splits /proc/PID/cmdline. Processes that rewrite their title
// (k3s does) leave one space-separated string instead of NUL-separated
// arguments.
func splitCmdline(raw []byte) []string {
	raw = bytes.TrimRight(raw, "\x00")
	if len(raw) == 0 {
		return nil
	}
	if !bytes.Contains(raw, []byte{0}) {
		return strings.Fields(string(raw))
	}
	return strings.Split(string(raw), "\x00")
}

// kubeletArgs recognises a kubelet command line and returns its kubelet
// flags: a kubelet binary, hyperkube's kubelet, or k3s, which runs the
// kubelet in-process and passes it --kubelet-arg values.
func kubeletArgs(argv []string) ([]string, bool) {
	if len(argv) == 0 {
		return nil, false
	}
	switch filepath.Base(argv[0]) {
	case "kubelet":
		return argv[1:], true
	case "hyperkube":
		if len(argv) > 1 && argv[1] == "kubelet" {
			return argv[2:], true
		}
	case "k3s":
		if len(argv) > 1 && (argv[1] == "server" || argv[1] == "agent") {
			return k3sKubeletArgs(argv[2:]), true
		}
	}
	return nil, false
}

// k3sKubeletArgs turns k3s's `--kubelet-arg NAME=VALUE` into kubelet flags.
func k3sKubeletArgs(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		var v string
		switch {
		case strings.HasPrefix(args[i], "--kubelet-arg="):
			v = strings.TrimPrefix(args[i], "--kubelet-arg=")
		case args[i] == "--kubelet-arg" && i+1 < len(args):
			i++
			v = args[i]
		default:
			continue
		}
		out = append(out, "--"+strings.TrimPrefix(v, "--"))
	}
	return out
}

// lastFlag returns the value of a string flag, written --name=value or
// --name value; kubelet's flag parser lets the last one win.
func lastFlag(args []string, name string) (string, bool) {
	var val string
	var found bool
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "--"+name+"="):
			val, found = strings.TrimPrefix(a, "--"+name+"="), true
		case a == "--"+name && i+1 < len(args):
			i++
			val, found = args[i], true
		case a == "--":
			return val, found
		}
	}
	return val, found
}

// volumePluginDir reads volumePluginDir from a KubeletConfiguration, YAML
// or JSON.
func volumePluginDir(raw []byte) (string, error) {
	var cfg struct {
		VolumePluginDir string `json:"volumePluginDir"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("parse kubelet configuration: %w", err)
	}
	return cfg.VolumePluginDir, nil
}
