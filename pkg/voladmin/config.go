package voladmin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/drover-net/drover/pkg/flexvol"
	"github.com/drover-net/drover/pkg/plugindir"
)

// pluginDirs lists the kubelet volume plugin directories to search for the
// installed driver, best first: the one the node's kubelet uses, found as
// the installer finds it, then every directory a known distribution uses.
// pkg/install owns both, so the command asks it rather than keep a copy
// that would drift. A variable so tests search their own directories.
var pluginDirs = func() []string {
	var dirs []string
	if d, err := (plugindir.Detector{}).PluginDir(); err == nil {
		dirs = append(dirs, d.Dir)
	}
	for _, k := range plugindir.KnownPluginDirs {
		dirs = append(dirs, k.Path)
	}
	return dirs
}

// choice is the state directory the command works on and where it came
// from, which every run reports: a wrong guess must be visible.
type choice struct {
	dir, source string
}

// flags are the command-line settings that pick the state directory.
type flags struct {
	stateDir, config, pluginDir string
}

// chooseStateDir picks the state directory, first match wins: --state-dir;
// the driver config named by --config or $DROVER_LOCAL_CONFIG; the
// drover-local.json beside the driver in --plugin-dir; else the one beside
// an installed driver in pluginDirs (several that disagree are an error);
// else the driver's default. As in the driver, $DROVER_LOCAL_STATE_DIR
// wins over any file.
func chooseStateDir(f flags, getenv func(string) string) (choice, error) {
	if f.stateDir != "" {
		return choice{f.stateDir, "--state-dir"}, nil
	}
	load := func(file, source string) (choice, error) {
		cfg, err := flexvol.LoadConfigFile(file, getenv)
		if err != nil {
			return choice{}, err
		}
		if getenv(flexvol.EnvStateDir) != "" {
			source = "$" + flexvol.EnvStateDir
		}
		return choice{cfg.StateDir, source}, nil
	}
	switch {
	case f.config != "":
		return load(f.config, "--config "+f.config)
	case getenv(flexvol.EnvConfig) != "":
		return load(getenv(flexvol.EnvConfig), "$"+flexvol.EnvConfig+" "+getenv(flexvol.EnvConfig))
	case f.pluginDir != "":
		driverDir := filepath.Join(f.pluginDir, plugindir.DriverDir)
		if st, err := os.Stat(driverDir); err != nil || !st.IsDir() {
			return choice{}, fmt.Errorf("--plugin-dir %s: no %s driver directory there", f.pluginDir, plugindir.DriverDir)
		}
		file := filepath.Join(driverDir, flexvol.ConfigFileName)
		if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
			return load("", "the driver's default: no "+file)
		}
		return load(file, file)
	}
	var found []choice
	searched := dedupe(pluginDirs())
	for _, dir := range searched {
		file := filepath.Join(dir, plugindir.DriverDir, flexvol.ConfigFileName)
		if st, err := os.Stat(file); err != nil || !st.Mode().IsRegular() {
			continue
		}
		c, err := load(file, file)
		if err != nil {
			return choice{}, err
		}
		found = append(found, c)
	}
	for _, c := range found[min(1, len(found)):] {
		if c.dir != found[0].dir {
			var all []string
			for _, c := range found {
				all = append(all, fmt.Sprintf("%s (stateDir %s)", c.source, c.dir))
			}
			return choice{}, fmt.Errorf("driver configs disagree: %s; choose one with --plugin-dir or --config", strings.Join(all, ", "))
		}
	}
	if len(found) > 0 {
		return found[0], nil
	}
	return load("", fmt.Sprintf("the driver's default: no %s/%s in %s", plugindir.DriverDir, flexvol.ConfigFileName, strings.Join(searched, ", ")))
}

func dedupe(dirs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range dirs {
		d = filepath.Clean(d)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}
