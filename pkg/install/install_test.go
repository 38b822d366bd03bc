package install

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstall(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		wantCNI  string
		wantFlex string
		wantErr  string
	}{
		{
			name:     "both executables go under the host root, the driver in its vendor~driver directory",
			opts:     Options{PluginDir: "/var/lib/kubelet/volumeplugins"},
			wantCNI:  "/opt/cni/bin/drover",
			wantFlex: "/var/lib/kubelet/volumeplugins/drover~local/local",
		},
		{
			name:     "another CNI bin dir is honoured",
			opts:     Options{CNIBinDir: "/home/kubernetes/bin", PluginDir: "/home/kubernetes/flexvolume"},
			wantCNI:  "/home/kubernetes/bin/drover",
			wantFlex: "/home/kubernetes/flexvolume/drover~local/local",
		},
		{
			name:    "a relative CNI bin dir is refused before anything is written",
			opts:    Options{CNIBinDir: "opt/cni/bin", PluginDir: "/flex"},
			wantErr: "not an absolute host path",
		},
		{
			name:    "a missing source directory setting is refused",
			opts:    Options{PluginDir: "/flex", SourceDir: "-"},
			wantErr: "no source directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, host := t.TempDir(), t.TempDir()
			writeFile(t, filepath.Join(src, CNIPlugin), "cni plugin")
			writeFile(t, filepath.Join(src, FlexDriver), "flex driver")
			o := tt.opts
			o.HostRoot, o.ProcRoot = host, t.TempDir()
			switch o.SourceDir {
			case "-":
				o.SourceDir = ""
			case "":
				o.SourceDir = src
			}
			res, err := Install(o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Install error = %v, want %q", err, tt.wantErr)
				}
				if entries, _ := os.ReadDir(host); len(entries) != 0 {
					t.Errorf("a refused install wrote %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range map[string]string{tt.wantCNI: "cni plugin", tt.wantFlex: "flex driver"} {
				got, err := os.ReadFile(filepath.Join(host, path))
				if err != nil || string(got) != want {
					t.Errorf("%s holds %q (%v), want %q", path, got, err, want)
				}
			}
			if len(res.Files) != 2 || res.Files[0].Dst != tt.wantCNI || res.Files[1].Dst != tt.wantFlex || !res.Files[0].Changed || !res.Files[1].Changed {
				t.Errorf("result %+v, want both files installed at host paths", res.Files)
			}
		})
	}
}
