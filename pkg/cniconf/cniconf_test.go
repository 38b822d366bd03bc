package cniconf

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// The runtime's libcni chooses the spec version it calls drover with: a
// current one (1.2 and up) takes the highest of cniVersions, an older one
// (containerd before 2.0) knows only cniVersion and must find one it
// implements there.
func TestRenderServesOldAndNewRuntimes(t *testing.T) {
	data, err := Render(Options{NodeState: "/run/drover/node.json", Portmap: true})
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		CNIVersion  string   `json:"cniVersion"`
		CNIVersions []string `json:"cniVersions"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.CNIVersion != "1.0.0" {
		t.Errorf("cniVersion %q, want 1.0.0, the newest a pre-1.2 libcni accepts", raw.CNIVersion)
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatalf("libcni refuses the conflist: %v\n%s", err, data)
	}
	if list.CNIVersion != "1.1.0" {
		t.Errorf("current libcni picks %q, want 1.1.0 (STATUS and GC)", list.CNIVersion)
	}
	if len(list.Plugins) != 2 || list.Plugins[0].Network.Type != "drover" || list.Plugins[1].Network.Type != "portmap" {
		t.Errorf("plugins %+v, want drover then portmap", list.Plugins)
	}
}

func TestWriteOnlyWhenChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultName)
	wrote, err := Write(path, Options{})
	if err != nil || !wrote {
		t.Fatalf("first write: wrote=%v err=%v", wrote, err)
	}
	st, _ := os.Stat(path)
	wrote, err = Write(path, Options{})
	if err != nil || wrote {
		t.Fatalf("second write of the same list: wrote=%v err=%v", wrote, err)
	}
	if st2, _ := os.Stat(path); !os.SameFile(st, st2) {
		t.Error("identical list replaced the file (the runtime's watch fires for nothing)")
	}
	if wrote, err = Write(path, Options{Portmap: true}); err != nil || !wrote {
		t.Fatalf("changed list: wrote=%v err=%v", wrote, err)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}
