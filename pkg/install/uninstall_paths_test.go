package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/drover-net/drover/internal/testns"
)

// uninstallIn runs Uninstall in a namespace of its own: the network steps
// run too, and the machine's network must not pay for them.
func uninstallIn(t *testing.T, o UninstallOptions) ([]Step, error) {
	t.Helper()
	var steps []Step
	var err error
	if nsErr := testns.New(t).Do(func(ns.NetNS) error {
		steps, err = Uninstall(context.Background(), o)
		return nil
	}); nsErr != nil {
		t.Fatal(nsErr)
	}
	return steps, err
}

func TestUninstallRemovesStateWhereDroverdKeptIt(t *testing.T) {
	tests := []struct {
		name   string
		opts   UninstallOptions
		drover []string // files that must go
		kept   []string // files beside them that must stay
		gone   []string // directories that must go
		stays  []string // directories that must stay, emptied or not
	}{
		{
			name: "a state file and an IPAM dir elsewhere lose drover's files and keep their neighbours",
			opts: UninstallOptions{StateFile: "/srv/state/node.json", IPAMDir: "/srv/ipam"},
			drover: []string{
				"/srv/state/node.json",
				"/srv/state/peers.json",
				// Temp files of a killed nodestate.WriteFileAtomic.
				"/srv/state/.node.json.tmp-123",
				"/srv/state/.peers.json.tmp-456",
				"/srv/ipam/drover/lock",
				"/srv/ipam/drover/last_reserved",
				"/srv/ipam/drover/10.244.1.5",
			},
			kept: []string{
				"/srv/state/other.json",
				"/srv/state/node.json.bak",
				"/srv/state/.nodes.json.tmp-1",
				"/srv/ipam/other-net/10.1.0.5",
			},
			gone:  []string{"/srv/ipam/drover"},
			stays: []string{"/srv/state", "/srv/ipam"},
		},
		{
			name: "an IPAM dir left empty goes, the state file's directory stays",
			opts: UninstallOptions{StateFile: "/var/lib/node-agent/state.json", IPAMDir: "/var/lib/node-agent/ipam"},
			drover: []string{
				"/var/lib/node-agent/state.json",
				"/var/lib/node-agent/peers.json",
				"/var/lib/node-agent/ipam/drover/10.244.1.5",
			},
			gone:  []string{"/var/lib/node-agent/ipam"},
			stays: []string{"/var/lib/node-agent", "/var/lib"},
		},
		{
			name: "the default state file and IPAM store go with another run dir",
			opts: UninstallOptions{RunDir: "/run/drover-alt"},
			drover: []string{
				"/run/drover/node.json",
				"/run/drover/peers.json",
				"/run/drover/ipam/drover/10.244.1.5",
				"/run/drover-alt/leftover",
			},
			kept:  []string{"/run/other/file"},
			gone:  []string{"/run/drover/ipam", "/run/drover-alt"},
			stays: []string{"/run/drover"},
		},
		{
			name: "an IPAM dir that is the CNI conf dir stays when emptied",
			opts: UninstallOptions{CNIConfDir: "/etc/cni/conf.d", IPAMDir: "/etc/cni/conf.d"},
			drover: []string{
				"/etc/cni/conf.d/10-drover.conflist",
				"/etc/cni/conf.d/drover/10.244.1.5",
			},
			gone:  []string{"/etc/cni/conf.d/drover"},
			stays: []string{"/etc/cni/conf.d"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := t.TempDir()
			makeHost(t, host)
			for _, p := range append(append([]string{}, tt.drover...), tt.kept...) {
				writeFile(t, filepath.Join(host, p), "content of "+p)
			}
			tt.opts.HostRoot = host
			tt.opts.PluginDir = "/var/lib/kubelet/volumeplugins"
			for round := 1; round <= 2; round++ {
				if _, err := uninstallIn(t, tt.opts); err != nil {
					t.Fatalf("uninstall round %d (the second finds everything gone): %v", round, err)
				}
			}
			for _, p := range append(append([]string{}, tt.drover...), tt.gone...) {
				if _, err := os.Lstat(filepath.Join(host, p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s is still there (%v)", p, err)
				}
			}
			for _, p := range append(append([]string{}, tt.kept...), keptFiles...) {
				got, err := os.ReadFile(filepath.Join(host, p))
				if err != nil || string(got) != "content of "+p {
					t.Errorf("%s was touched: %q, %v", p, got, err)
				}
			}
			for _, d := range append(append([]string{}, tt.stays...), keptDirs...) {
				if fi, err := os.Stat(filepath.Join(host, d)); err != nil || !fi.IsDir() {
					t.Errorf("directory %s went: %v", d, err)
				}
			}
		})
	}
}

func TestUninstallRefusesUnusableStatePaths(t *testing.T) {
	custom := []string{"/srv/state/node.json", "/srv/state/peers.json", "/srv/ipam/drover/10.244.1.5", "/srv/ipam-file"}
	tests := []struct {
		name string
		opts UninstallOptions
	}{
		{"a relative state file", UninstallOptions{StateFile: "srv/state/node.json"}},
		{"a relative IPAM dir", UninstallOptions{IPAMDir: "srv/ipam"}},
		{"the root as state file", UninstallOptions{StateFile: "/"}},
		{"the root as IPAM dir", UninstallOptions{IPAMDir: "/"}},
		{"a state file inside the volume data", UninstallOptions{StateFile: "/var/lib/drover/node.json"}},
		{"an IPAM dir inside the volume data", UninstallOptions{IPAMDir: "/var/lib/drover/volumes"}},
		{"an IPAM dir whose store would be the volume data", UninstallOptions{IPAMDir: "/var/lib"}},
		{"a state file that is a directory", UninstallOptions{StateFile: "/srv/state"}},
		{"an IPAM dir that is a file", UninstallOptions{IPAMDir: "/srv/ipam-file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := t.TempDir()
			makeHost(t, host)
			for _, p := range custom {
				writeFile(t, filepath.Join(host, p), "content of "+p)
			}
			tt.opts.HostRoot = host
			tt.opts.PluginDir = "/var/lib/kubelet/volumeplugins"
			steps, err := uninstallIn(t, tt.opts)
			if err == nil || len(steps) != 0 {
				t.Fatalf("Uninstall = %d steps, %v; want a refusal before any step", len(steps), err)
			}
			for _, p := range append(append(append([]string{}, droverFiles...), keptFiles...), custom...) {
				if _, err := os.Stat(filepath.Join(host, p)); err != nil {
					t.Errorf("%s went although uninstall refused: %v", p, err)
				}
			}
		})
	}
}
