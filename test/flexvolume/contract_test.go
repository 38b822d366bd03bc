package flexvolume_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestContract runs the built driver with the argv and JSON kubelet v1.37
// builds for each verb (k8s.io/kubernetes/pkg/volume/flexvolume) and checks
// each answer. The cases run in order on one node: they share a volume.
func TestContract(t *testing.T) {
	e := newEnv(t, nil)
	podA := e.podDir("pod-a", "data")
	podB := e.podDir("pod-b", "data")
	pv := map[string]string{"size": "64Mi"}
	global := filepath.Join(e.stateDir, "mounts", "pv-data")
	deviceMountPath := filepath.Join(e.root, "kubelet", "plugins", "kubernetes.io", "flexvolume", "drover", "local", "mounts", "pv-data")

	expandWant := "Success"
	if !onlineExt4Resize() {
		expandWant = "Failure"
	}
	cases := []struct {
		name  string
		args  []string
		want  string
		check func(t *testing.T, r result)
	}{
		{"init answers Success with the declared capabilities", []string{"init"}, "Success", func(t *testing.T, r result) {
			want := map[string]bool{"attach": false, "supportsMetrics": true, "fsGroup": true, "selinuxRelabel": true, "requiresFSResize": true}
			for k, v := range want {
				got, ok := r.Capabilities[k]
				if !ok || got != v {
					t.Errorf("capability %s = %v (present %v), want %v", k, got, ok, v)
				}
			}
			if _, err := os.Stat(e.stateDir); err == nil {
				t.Errorf("init created the state dir: it must have no side effects")
			}
		}},
		{"getvolumename is Not supported so kubelet uses the PV name", []string{"getvolumename", specOptions("pv-data", pv)}, "Not supported", nil},
		{"mount creates, formats and bind-mounts the volume into the pod dir",
			[]string{"mount", podA, kubeletOptions("pv-data", false, "", "2000", pv)}, "Success", func(t *testing.T, r result) {
				m, ok := mountAt(t, podA)
				if !ok || m.FSType != "ext4" || m.ReadOnly() {
					t.Fatalf("pod dir mount = %+v (mounted %v), want a read-write ext4 bind mount", m, ok)
				}
				if _, ok := mountAt(t, global); !ok {
					t.Errorf("no global mount at %s", global)
				}
				var st unix.Stat_t
				if err := unix.Stat(podA, &st); err != nil || st.Gid != 2000 || st.Mode&unix.S_ISGID == 0 {
					t.Errorf("fresh filesystem root: gid %d mode %o, want gid 2000 with setgid", st.Gid, st.Mode)
				}
				img := filepath.Join(e.stateDir, "volumes", "pv-data.img")
				if fi, err := os.Stat(img); err != nil || fi.Size() != 64<<20 {
					t.Errorf("image %s: %v size %d, want 64Mi", img, err, fi.Size())
				}
				if err := os.WriteFile(filepath.Join(podA, "hello"), []byte("from pod A"), 0o644); err != nil {
					t.Errorf("write through the pod dir: %v", err)
				}
			}},
		{"mount of a second pod read-only shares the loop device and global mount",
			[]string{"mount", podB, kubeletOptions("pv-data", true, "ext4", "", map[string]string{})}, "Success", func(t *testing.T, r result) {
				a, _ := mountAt(t, podA)
				b, ok := mountAt(t, podB)
				if !ok || !b.ReadOnly() || a.Major != b.Major || a.Minor != b.Minor {
					t.Fatalf("pod B mount %+v: want a read-only mount of pod A's device", b)
				}
				if loops := e.loopsOf("pv-data"); len(loops) != 1 {
					t.Errorf("loop devices of the image: %v, want exactly one", loops)
				}
				if err := os.WriteFile(filepath.Join(podB, "x"), nil, 0o644); err == nil {
					t.Errorf("write into the read-only pod dir succeeded")
				}
				if b, err := os.ReadFile(filepath.Join(podB, "hello")); err != nil || string(b) != "from pod A" {
					t.Errorf("pod B reads %q, %v", b, err)
				}
			}},
		{"attach is Not supported: kubelet's default returns an empty device path",
			[]string{"attach", specOptions("pv-data", pv), "node-1"}, "Not supported", nil},
		{"waitforattach is Not supported: kubelet's default returns the device path unchanged",
			[]string{"waitforattach", "", specOptions("pv-data", pv)}, "Not supported", nil},
		{"isattached is Not supported: nothing is ever marked detached",
			[]string{"isattached", specOptions("pv-data", pv), "node-1"}, "Not supported", nil},
		{"mountdevice is a Success no-op so kubelet never formats a device path itself",
			[]string{"mountdevice", deviceMountPath, "", specOptions("pv-data", pv)}, "Success", func(t *testing.T, r result) {
				if _, err := os.Stat(deviceMountPath); err == nil {
					t.Errorf("mountdevice created %s", deviceMountPath)
				}
			}},
		{"unmountdevice is Not supported: kubelet's CleanupMountPoint is right",
			[]string{"unmountdevice", deviceMountPath}, "Not supported", nil},
		{"detach is Not supported: kubelet's default does nothing",
			[]string{"detach", "pv-data", "node-1"}, "Not supported", nil},
		{"expandvolume answers Success: the node grows the image in expandfs",
			[]string{"expandvolume", specOptions("pv-data", pv), deviceMountPath, "134217728", "67108864"}, "Success", nil},
		{"expandfs grows the image, and the mounted ext4 filesystem online where the kernel allows it",
			[]string{"expandfs", specOptions("pv-data", pv), "", podA, "134217728", "67108864"}, expandWant, func(t *testing.T, r result) {
				fi, err := os.Stat(filepath.Join(e.stateDir, "volumes", "pv-data.img"))
				if err != nil || fi.Size() != 128<<20 {
					t.Fatalf("image after expandfs: %v, size %d, want 128Mi", err, fi.Size())
				}
				if !onlineExt4Resize() {
					// Without CAP_SYS_RESOURCE the answer must say why and
					// when the filesystem grows (checked in TestExpand).
					if !strings.Contains(r.Message, "CAP_SYS_RESOURCE") {
						t.Errorf("Failure without the reason: %s", r.Message)
					}
					return
				}
				if total := fsSize(t, podA); total < 100<<20 {
					t.Errorf("filesystem is %d bytes after expandfs, want about 128Mi", total)
				}
				if b, err := os.ReadFile(filepath.Join(podA, "hello")); err != nil || string(b) != "from pod A" {
					t.Errorf("data after expandfs: %q, %v", b, err)
				}
			}},
		{"unmount of one pod keeps the volume mounted for the other",
			[]string{"unmount", podA}, "Success", func(t *testing.T, r result) {
				if _, ok := mountAt(t, podA); ok {
					t.Errorf("pod A still mounted")
				}
				if _, ok := mountAt(t, podB); !ok {
					t.Errorf("pod B lost its mount")
				}
				if len(e.loopsOf("pv-data")) != 1 {
					t.Errorf("loop device gone while pod B uses it")
				}
			}},
		{"unmount of the last pod frees the global mount and the loop device",
			[]string{"unmount", podB}, "Success", func(t *testing.T, r result) {
				e.assertReleased("pv-data")
				if _, err := os.Stat(filepath.Join(e.stateDir, "volumes", "pv-data.img")); err != nil {
					t.Errorf("image gone after unmount: %v", err)
				}
			}},
		{"unmount again is an idempotent Success",
			[]string{"unmount", podB}, "Success", nil},
		{"an unknown verb is Not supported so kubelet's fallback applies",
			[]string{"frobnicate", "x"}, "Not supported", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.run(c.args...)
			if r.Status != c.want {
				t.Fatalf("%s: status %q (%s), want %q", c.args[0], r.Status, r.Message, c.want)
			}
			if c.check != nil {
				c.check(t, r)
			}
		})
	}

	t.Run("every call wrote exactly one log line without secrets", func(t *testing.T) {
		lines := e.logLines()
		if len(lines) != len(cases) {
			t.Errorf("log has %d lines for %d calls", len(lines), len(cases))
		}
	})
}

// TestSecretsNeverLogged passes kubelet's kubernetes.io/secret/* options
// (base64 values, as addSecretsToOptions makes them) on success and on
// failure and looks for them everywhere the driver writes.
func TestSecretsNeverLogged(t *testing.T) {
	e := newEnv(t, nil)
	pod := e.podDir("pod-s", "vol")
	const secret = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk" // base64("super-secret-password")
	opts := map[string]string{"size": "32Mi", "kubernetes.io/secret/password": secret}
	for _, args := range [][]string{
		{"mount", pod, kubeletOptions("pv-secret", false, "", "", opts)},
		{"unmount", pod},
		{"mount", pod, kubeletOptions("pv-secret", false, "btrfs", "", opts)},
		{"mount", pod, kubeletOptions("pv-secret", false, "", "", map[string]string{"size": "0", "kubernetes.io/secret/password": secret})},
		{"expandfs", specOptions("pv-secret", opts), "", pod, "33554432", "33554432"},
		{"getvolumename", specOptions("pv-secret", opts)},
	} {
		r := e.run(args...)
		if strings.Contains(r.stdout, secret) {
			t.Errorf("%s answer holds the secret: %s", args[0], r.stdout)
		}
	}
	b, _ := os.ReadFile(filepath.Join(e.logDir, "local.log"))
	if strings.Contains(string(b), secret) || strings.Contains(string(b), "super-secret") {
		t.Errorf("log holds the secret:\n%s", b)
	}
	if len(e.logLines()) != 6 {
		t.Errorf("want one log line per call")
	}
}
