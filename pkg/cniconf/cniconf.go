// Package cniconf renders and writes the CNI network configuration list
// that tells the container runtime to call drover. droverd writes it only
// once the node can serve pods, so the runtime (which watches the directory)
// never calls a plugin that cannot answer; the node stays NotReady until
// then.
package cniconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/drover-net/drover/pkg/nodestate"
)

// DefaultName sorts before most other networks' files, since runtimes use
// the first conflist of the directory.
const DefaultName = "10-drover.conflist"

// NetworkName is the CNI network name droverd writes.
const NetworkName = "drover"

// Spec versions of the conflist. The plugin serves every version from
// 0.3.0, but the runtime's libcni picks the version it calls with, and a
// libcni older than 1.2 (containerd 1.6, which Debian 12 ships, among
// others) refuses a 1.1.0 list: each sandbox fails with "unsupported CNI
// result version". So the list names 1.0.0 in
// cniVersion, which every runtime of the last years accepts, and both
// versions in cniVersions (spec 1.1), from which a newer libcni takes the
// highest it implements and gains STATUS and GC.
const (
	LegacyVersion = "1.0.0"
	LatestVersion = "1.1.0"
)

// Options shape the conflist.
type Options struct {
	// NodeState is the state file path the plugin reads; empty means the
	// plugin's default.
	NodeState string
	// DataDir is the IPAM store root; empty means the plugin's default.
	DataDir string
	// Portmap chains the reference portmap plugin for hostPort support.
	Portmap bool
}

// Render returns the conflist.
func Render(o Options) ([]byte, error) {
	drover := map[string]any{"type": "drover"}
	if o.NodeState != "" {
		drover["nodeState"] = o.NodeState
	}
	if o.DataDir != "" {
		drover["dataDir"] = o.DataDir
	}
	plugins := []any{drover}
	if o.Portmap {
		plugins = append(plugins, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true})
	}
	list := map[string]any{
		"cniVersion":  LegacyVersion,
		"cniVersions": []string{LegacyVersion, LatestVersion},
		"name":        NetworkName,
		"plugins":     plugins,
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render conflist: %w", err)
	}
	return append(data, '\n'), nil
}

// Write puts the conflist at path atomically, and only when its content
// differs, so the runtime's directory watch does not fire for nothing. It
// reports whether it wrote.
func Write(path string, o Options) (bool, error) {
	data, err := Render(o)
	if err != nil {
		return false, err
	}
	cur, err := os.ReadFile(path)
	if err == nil && bytes.Equal(cur, data) {
		return false, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	if err := nodestate.WriteFileAtomic(path, data, 0o644); err != nil {
		return false, fmt.Errorf("write conflist: %w", err)
	}
	return true, nil
}

// Remove deletes the conflist; a missing file is fine.
func Remove(path string) error {
	err := os.Remove(filepath.Clean(path))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove conflist: %w", err)
	}
	return nil
}
