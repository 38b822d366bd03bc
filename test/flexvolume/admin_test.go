package flexvolume_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-net/drover/pkg/voladmin"
)

// TestAdminCommand lists volumes as a table and as JSON, refuses to delete
// a mounted volume, and deletes it once no pod uses it.
func TestAdminCommand(t *testing.T) {
	e := newEnv(t, nil)
	pod := e.podDir("pod-admin", "v")
	e.mustSucceed("mount", pod, kubeletOptions("pv-admin", false, "", "", map[string]string{"size": "48Mi"}))
	writeFileSync(t, filepath.Join(pod, "f"), bytes.Repeat([]byte("x"), 2<<20))
	cfgFile := filepath.Join(filepath.Dir(e.exe), "drover-local.json")
	admin := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := voladmin.Main(args, &out, &errb, func(string) string { return "" })
		return out.String(), errb.String(), code
	}

	t.Run("list prints a table with size, use and where mounted", func(t *testing.T) {
		out, _, code := admin("--config", cfgFile, "list")
		if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "pv-admin") ||
			!strings.Contains(out, "48Mi") || !strings.Contains(out, pod) {
			t.Fatalf("exit %d, table:\n%s", code, out)
		}
	})
	t.Run("list -o json gives scripts the numbers", func(t *testing.T) {
		out, _, code := admin("--state-dir", e.stateDir, "-o", "json", "list")
		var vols []struct {
			Name      string   `json:"name"`
			SizeBytes int64    `json:"sizeBytes"`
			UsedBytes *int64   `json:"usedBytes"`
			MountedAt []string `json:"mountedAt"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &vols) != nil || len(vols) != 1 {
			t.Fatalf("exit %d, output %s", code, out)
		}
		v := vols[0]
		if v.Name != "pv-admin" || v.SizeBytes != 48<<20 || v.UsedBytes == nil || *v.UsedBytes < 2<<20 ||
			len(v.MountedAt) != 1 || v.MountedAt[0] != pod {
			t.Errorf("got %+v", v)
		}
	})
	t.Run("delete is refused while a pod uses the volume", func(t *testing.T) {
		_, errOut, code := admin("--state-dir", e.stateDir, "delete", "pv-admin")
		if code != 1 || !strings.Contains(errOut, "in use") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if _, err := os.Stat(filepath.Join(e.stateDir, "volumes", "pv-admin.img")); err != nil {
			t.Fatalf("image gone after a refused delete: %v", err)
		}
	})
	t.Run("delete removes an unused volume, and a second delete says not found", func(t *testing.T) {
		e.mustSucceed("unmount", pod)
		out, errOut, code := admin("--state-dir", e.stateDir, "-o", "json", "delete", "pv-admin")
		if code != 0 || !strings.Contains(out, `"deleted"`) {
			t.Fatalf("exit %d: %s %s", code, out, errOut)
		}
		if _, err := os.Stat(filepath.Join(e.stateDir, "volumes", "pv-admin.img")); !os.IsNotExist(err) {
			t.Errorf("image still there: %v", err)
		}
		_, errOut, code = admin("--state-dir", e.stateDir, "delete", "pv-admin")
		if code != 1 || !strings.Contains(errOut, "not found") {
			t.Errorf("second delete: exit %d %s", code, errOut)
		}
		// A mount without size cannot silently recreate it.
		r := e.run("mount", pod, kubeletOptions("pv-admin", false, "", "", nil))
		if r.Status != "Failure" || !strings.Contains(r.Message, "size is required") {
			t.Errorf("mount of a deleted volume: %s %s", r.Status, r.Message)
		}
	})
	t.Run("bad usage exits 2", func(t *testing.T) {
		if _, _, code := admin("--state-dir", e.stateDir, "delete"); code != 2 {
			t.Errorf("exit %d", code)
		}
		if _, _, code := admin("--state-dir", e.stateDir, "delete", "../x"); code != 1 {
			t.Errorf("invalid name: exit %d", code)
		}
	})
}

// TestAdminFindsTheDriverConfig: without --state-dir or --config, the admin
// command uses the stateDir of the drover-local.json beside the installed
// driver, and says so; before, it silently used /var/lib/drover.
func TestAdminFindsTheDriverConfig(t *testing.T) {
	e := newEnv(t, nil)
	pod := e.podDir("pod-cfg", "v")
	e.mustSucceed("mount", pod, kubeletOptions("pv-cfg", false, "", "", map[string]string{"size": "32Mi"}))
	pluginDir := filepath.Dir(filepath.Dir(e.exe))
	cfgFile := filepath.Join(filepath.Dir(e.exe), "drover-local.json")
	var out, errb bytes.Buffer
	code := voladmin.Main([]string{"--plugin-dir", pluginDir, "list"}, &out, &errb, func(string) string { return "" })
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if first := strings.SplitN(out.String(), "\n", 2)[0]; first != "state dir "+e.stateDir+" (from "+cfgFile+")" {
		t.Errorf("first line %q does not name the driver's state dir and config", first)
	}
	if !strings.Contains(out.String(), "pv-cfg") || !strings.Contains(out.String(), pod) {
		t.Errorf("the driver's volume is not listed:\n%s", out.String())
	}
	e.mustSucceed("unmount", pod)
}
