package flexvolume_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInput answers every malformed call with Failure, exit code 1, a
// message that names the problem, and no change to the node: no file in
// the state dir, no mount, no loop device.
func TestBadInput(t *testing.T) {
	e := newEnv(t, nil)
	// An existing, released volume, so "nothing changed" covers it too.
	pod := e.podDir("pod-ok", "v")
	e.mustSucceed("mount", pod, kubeletOptions("pv-exists", false, "", "", map[string]string{"size": "32Mi"}))
	e.mustSucceed("unmount", pod)
	file := filepath.Join(e.root, "a-file")
	os.WriteFile(file, nil, 0o644)
	missing := filepath.Join(e.root, "kubelet", "pods", "gone", "volumes", "drover~local", "v")
	opt := func(kv ...string) string {
		m := map[string]string{"size": "32Mi"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "<delete>" {
				delete(m, kv[i])
				continue
			}
			m[kv[i]] = kv[i+1]
		}
		return kubeletOptions("pv-new", false, "", "", m)
	}
	noName := `{"size":"32Mi","kubernetes.io/fsType":"","kubernetes.io/readwrite":"rw"}`

	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"truncated JSON is refused", []string{"mount", pod, `{"volumeID":"x",`}, "not a JSON object"},
		{"a JSON array is refused", []string{"mount", pod, `["volumeID"]`}, "not a JSON object"},
		{"JSON null is refused", []string{"mount", pod, `null`}, "not a JSON object"},
		{"trailing data after the object is refused", []string{"mount", pod, `{"volumeID":"x"} {}`}, "trailing data"},
		{"a number where a string belongs is refused", []string{"mount", pod, `{"volumeID":"x","size":5}`}, `option "size" must be a string`},
		{"a new volume without size is refused", []string{"mount", pod, opt("size", "<delete>")}, "size is required"},
		{"size 0 is refused", []string{"mount", pod, opt("size", "0")}, "must be positive"},
		{"a negative size is refused", []string{"mount", pod, opt("size", "-1Gi")}, "must be positive"},
		{"an absurd size is refused", []string{"mount", pod, opt("size", "8Ei")}, "above the maximum"},
		{"a size beyond int64 is refused", []string{"mount", pod, opt("size", "100000Ei")}, "above the maximum"},
		{"a size that is not a quantity is refused", []string{"mount", pod, opt("size", "lots")}, "not a Kubernetes quantity"},
		{"a size below the minimum is refused", []string{"mount", pod, opt("size", "1Ki")}, "below the minimum"},
		{"xfs below mkfs.xfs's floor is refused", []string{"mount", pod, opt("size", "64Mi", "kubernetes.io/fsType", "xfs")}, "below the minimum"},
		{"a ../ volume name is refused", []string{"mount", pod, opt("volumeID", "../etc")}, "invalid volume name"},
		{"a volume name with a slash is refused", []string{"mount", pod, opt("volumeID", "a/b")}, "invalid volume name"},
		{"a volume name with .. inside is refused", []string{"mount", pod, opt("volumeID", "a..b")}, "invalid volume name"},
		{"an upper-case volume name is refused", []string{"mount", pod, opt("volumeID", "Data")}, "invalid volume name"},
		{"a PV name with a shell metacharacter is refused", []string{"mount", pod, kubeletOptions("pv;rm -rf", false, "", "", map[string]string{"size": "32Mi"})}, "invalid volume name"},
		{"no volume name at all is refused", []string{"mount", pod, noName}, "no volume name"},
		{"an unknown fsType is refused", []string{"mount", pod, opt("kubernetes.io/fsType", "btrfs")}, `fsType "btrfs" is not supported`},
		{"an unknown option is refused", []string{"mount", pod, opt("colour", "blue")}, `unknown option "colour"`},
		{"a readwrite value other than ro/rw is refused", []string{"mount", pod, opt("kubernetes.io/readwrite", "maybe")}, "must be \"ro\" or \"rw\""},
		{"a non-numeric fsGroup is refused", []string{"mount", pod, opt("kubernetes.io/mounterArgs.FsGroup", "wheel")}, "must be a group ID"},
		{"a missing pod dir is refused", []string{"mount", missing, opt()}, "no such file or directory"},
		{"a relative pod dir is refused", []string{"mount", "pods/x", opt()}, "absolute, clean path"},
		{"a pod dir with .. is refused", []string{"mount", pod + "/../v", opt()}, "absolute, clean path"},
		{"a pod dir that is a file is refused", []string{"mount", file, opt()}, "not a directory"},
		{"mount with one argument is refused", []string{"mount", pod}, "mount takes 2 arguments, got 1"},
		{"unmount without arguments is refused", []string{"unmount"}, "unmount takes 1 arguments, got 0"},
		{"unmount of a relative dir is refused", []string{"unmount", "pods/x"}, "absolute, clean path"},
		{"init with an argument is refused", []string{"init", "x"}, "init takes 0 arguments"},
		{"expandfs with a non-numeric size is refused", []string{"expandfs", specOptions("pv-exists", nil), "", pod, "big", "0"}, `size "big" is not a byte count`},
		{"expandfs with too few arguments is refused", []string{"expandfs", specOptions("pv-exists", nil), pod}, "expandfs takes 5 arguments, got 2"},
		{"expandfs of a volume that does not exist is refused", []string{"expandfs", specOptions("pv-none", nil), "", pod, "67108864", "33554432"}, "volume not found"},
		{"expandfs beyond the maximum is refused", []string{"expandfs", specOptions("pv-exists", nil), "", pod, "9000000000000000000", "33554432"}, "above the maximum"},
		{"no command at all is refused", []string{}, "no command given"},
	}
	if len(cases) < 20 {
		t.Fatalf("want at least 20 bad-input cases")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.snapshot()
			r := e.run(c.args...)
			if r.Status != "Failure" || r.code != 1 {
				t.Fatalf("got %q exit %d (%s), want Failure exit 1", r.Status, r.code, r.Message)
			}
			if !strings.Contains(r.Message, c.msg) {
				t.Errorf("message %q does not say %q", r.Message, c.msg)
			}
			if after := e.snapshot(); after != before {
				t.Errorf("the node changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// TestDeadline holds a volume's lock the way a stuck call would and checks
// that mount answers a clean Failure at its configured deadline.
func TestDeadline(t *testing.T) {
	e := newEnv(t, nil)
	pod := e.podDir("pod-d", "v")
	opts := kubeletOptions("pv-slow", false, "", "", map[string]string{"size": "32Mi"})
	e.mustSucceed("mount", pod, opts)
	e.mustSucceed("unmount", pod)
	e.writeConfig(map[string]any{"timeouts": map[string]string{"mount": "300ms"}})
	release := holdLock(t, filepath.Join(e.stateDir, "locks", "pv-slow.lock"))
	before := e.snapshot()
	r := e.run("mount", pod, opts)
	if r.Status != "Failure" || !strings.Contains(r.Message, "deadline exceeded after 300ms") {
		t.Errorf("got %s: %s, want a deadline Failure", r.Status, r.Message)
	}
	if after := e.snapshot(); after != before {
		t.Errorf("a timed-out mount changed the node")
	}
	release()
	e.writeConfig(nil)
	e.mustSucceed("mount", pod, opts)
	e.mustSucceed("unmount", pod)
	e.assertReleased("pv-slow")
}
