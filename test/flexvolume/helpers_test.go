// Package flexvolume_test runs the built drover/local driver the way kubelet
// v1.37 does: the executable, kubelet's argv and JSON, real image files,
// loop devices, mkfs and mounts, in temporary directories that stand for
// kubelet's. Every test removes its mounts and loop devices, even when it
// fails. The tests need root and fail (not skip) without it.
package flexvolume_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drover-net/drover/pkg/loopdev"
	"github.com/drover-net/drover/pkg/mountinfo"
	"golang.org/x/sys/unix"
)

// driverBin is the driver built once for the package.
var driverBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: test/flexvolume needs root (loop devices, mkfs, mounts); run as root, e.g. make test")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "drover-flexbin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	driverBin = filepath.Join(dir, "local")
	build := exec.Command("go", "build", "-o", driverBin, "github.com/drover-net/drover/flexvolume/local")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: build driver: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's node: a driver install dir (executable plus config
// file, as an installer lays it out), a state dir, a log dir and a kubelet
// pods dir, all under one temp dir.
type env struct {
	t        *testing.T
	root     string
	exe      string
	stateDir string
	logDir   string
}

// newEnv makes the dirs and registers the cleanup of every mount and loop
// device under them before anything is created.
func newEnv(t *testing.T, extraConfig map[string]any) *env {
	t.Helper()
	root, err := os.MkdirTemp("", "drover-flex-")
	if err != nil {
		t.Fatal(err)
	}
	root, _ = filepath.EvalSymlinks(root)
	e := &env{t: t, root: root,
		exe:      filepath.Join(root, "plugins", "drover~local", "local"),
		stateDir: filepath.Join(root, "state"),
		logDir:   filepath.Join(root, "log"),
	}
	t.Cleanup(func() { cleanupUnder(t, root); os.RemoveAll(root) })
	if err := os.MkdirAll(filepath.Dir(e.exe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(driverBin, e.exe); err != nil {
		t.Fatal(err)
	}
	e.writeConfig(extraConfig)
	return e
}

// writeConfig writes drover-local.json next to the executable, as an
// installer would.
func (e *env) writeConfig(extra map[string]any) {
	e.t.Helper()
	cfg := map[string]any{"stateDir": e.stateDir, "logDir": e.logDir}
	for k, v := range extra {
		cfg[k] = v
	}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(filepath.Dir(e.exe), "drover-local.json"), b, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// cleanupUnder lazily unmounts everything mounted below root (deepest
// first) and frees every loop device whose image lives below root. It only
// ever touches what the test created.
func cleanupUnder(t *testing.T, root string) {
	for i := 0; i < 3; i++ {
		mounts, err := mountinfo.Read()
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		var mine []string
		for _, m := range mounts {
			if strings.HasPrefix(m.MountPoint, root+"/") {
				mine = append(mine, m.MountPoint)
			}
		}
		if len(mine) == 0 {
			break
		}
		sort.Slice(mine, func(a, b int) bool { return len(mine[a]) > len(mine[b]) })
		for _, p := range mine {
			if err := unix.Unmount(p, 0); err != nil {
				unix.Unmount(p, unix.MNT_DETACH) // last resort
			}
		}
	}
	for _, l := range loopsUnder(root) {
		if err := loopdev.DetachFile(l[0], l[1]); err != nil {
			t.Logf("cleanup: detach %s: %v", l[0], err)
		}
	}
}

// loopsUnder returns [device, backing file] pairs for images below root.
func loopsUnder(root string) [][2]string {
	var out [][2]string
	entries, _ := os.ReadDir("/sys/block")
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		b, err := loopdev.BackingFile(e.Name())
		if err == nil && strings.HasPrefix(b, root+"/") {
			out = append(out, [2]string{"/dev/" + e.Name(), b})
		}
	}
	return out
}

// status is the driver's answer as kubelet parses it.
type status struct {
	Status       string          `json:"status"`
	Message      string          `json:"message"`
	Device       string          `json:"device"`
	Attached     bool            `json:"attached"`
	Capabilities map[string]bool `json:"capabilities"`
}

// result is one run of the driver.
type result struct {
	status
	stdout, stderr string
	code           int
}

// run executes the driver with argv as kubelet does: no flags, no extra
// environment, stdout and stderr captured separately (kubelet combines
// them, which is why stderr must stay empty).
func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runEnv(nil, args...)
}

func (e *env) runEnv(extraEnv []string, args ...string) result {
	e.t.Helper()
	cmd := exec.Command(e.exe, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
	if err != nil && r.code < 0 {
		e.t.Fatalf("run %v: %v", args, err)
	}
	r.status = parseOne(e.t, r.stdout)
	if r.stderr != "" {
		e.t.Errorf("%v wrote to stderr: %q", args, r.stderr)
	}
	if (r.Status == "Success") != (r.code == 0) {
		e.t.Errorf("%v: status %q with exit code %d", args, r.Status, r.code)
	}
	return r
}

// parseOne checks stdout is exactly one JSON object.
func parseOne(t *testing.T, stdout string) status {
	t.Helper()
	var s status
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("stdout is not a JSON object: %q: %v", stdout, err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err == nil {
		t.Fatalf("stdout holds more than one JSON value: %q", stdout)
	}
	return s
}

func (e *env) mustSucceed(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.Status != "Success" {
		e.t.Fatalf("%s: want Success, got %q: %s", args[0], r.Status, r.Message)
	}
	return r
}

// podDir makes the dir kubelet would: pods/<uid>/volumes/drover~local/<vol>.
func (e *env) podDir(uid, vol string) string {
	e.t.Helper()
	d := filepath.Join(e.root, "kubelet", "pods", uid, "volumes", "drover~local", vol)
	if err := os.MkdirAll(d, 0o750); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// kubeletOptions builds the JSON kubelet v1.37 passes to mount:
// NewOptionsForDriver (fsType, readwrite, pvOrVolumeName, the spec's
// options) plus SetUpAt's extras (pod name, namespace, uid, service
// account, fsGroup when set). pvOptions are the PV's flexVolume.options.
func kubeletOptions(pvName string, readOnly bool, fsType string, fsGroup string, pvOptions map[string]string) string {
	o := map[string]string{
		"kubernetes.io/fsType":              fsType,
		"kubernetes.io/readwrite":           "rw",
		"kubernetes.io/pvOrVolumeName":      pvName,
		"kubernetes.io/pod.name":            "web-0",
		"kubernetes.io/pod.namespace":       "default",
		"kubernetes.io/pod.uid":             "0b5c6a2e-8d36-4b7e-9d0c-1f2e3a4b5c6d",
		"kubernetes.io/serviceAccount.name": "default",
	}
	if readOnly {
		o["kubernetes.io/readwrite"] = "ro"
	}
	if fsGroup != "" {
		o["kubernetes.io/mounterArgs.FsGroup"] = fsGroup
	}
	for k, v := range pvOptions {
		o[k] = v
	}
	b, _ := json.Marshal(o)
	return string(b)
}

// specOptions is the JSON kubelet passes to verbs without pod context
// (attach, isattached, getvolumename, expandfs...): NewOptionsForDriver
// without extras.
func specOptions(pvName string, pvOptions map[string]string) string {
	o := map[string]string{
		"kubernetes.io/fsType":         "",
		"kubernetes.io/readwrite":      "rw",
		"kubernetes.io/pvOrVolumeName": pvName,
	}
	for k, v := range pvOptions {
		o[k] = v
	}
	b, _ := json.Marshal(o)
	return string(b)
}

// mountAt returns the mount at dir, if any.
func mountAt(t *testing.T, dir string) (mountinfo.Mount, bool) {
	t.Helper()
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	return mountinfo.At(mounts, dir)
}

// loopsOf lists the loop devices bound to the image.
func (e *env) loopsOf(vol string) []string {
	img := filepath.Join(e.stateDir, "volumes", vol+".img")
	var out []string
	for _, l := range loopsUnder(e.root) {
		if l[1] == img {
			out = append(out, l[0])
		}
	}
	return out
}

// assertReleased checks a volume nobody uses holds no mount and no loop.
func (e *env) assertReleased(vol string) {
	e.t.Helper()
	// The kernel frees an autoclear device on its last close; a process
	// outside this test (udev's probe) may hold it open for a moment, and
	// longer on a loaded machine, so allow that: a leaked device stays.
	if !within(20*time.Second, func() bool { return len(e.loopsOf(vol)) == 0 }) {
		e.t.Errorf("volume %s: loop devices left 20s after unmount: %v", vol, e.loopsOf(vol))
	}
	if _, ok := mountAt(e.t, filepath.Join(e.stateDir, "mounts", vol)); ok {
		e.t.Errorf("volume %s: global mount left after unmount", vol)
	}
}

// snapshot captures what a failed call must not change: the files under
// the state dir, the mounts and the loop devices under the test root.
func (e *env) snapshot() string {
	e.t.Helper()
	var b strings.Builder
	filepath.Walk(e.stateDir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "%s %d %v\n", p, info.Size(), info.Mode())
		}
		return nil
	})
	mounts, _ := mountinfo.Read()
	for _, m := range mounts {
		if strings.HasPrefix(m.MountPoint, e.root) {
			fmt.Fprintf(&b, "mount %s %d:%d\n", m.MountPoint, m.Major, m.Minor)
		}
	}
	for _, l := range loopsUnder(e.root) {
		fmt.Fprintf(&b, "loop %s %s\n", l[0], l[1])
	}
	return b.String()
}

// logLines returns the driver's log lines.
func (e *env) logLines() []map[string]any {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.logDir, "local.log"))
	if err != nil {
		e.t.Fatalf("read log: %v", err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			e.t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func writeFileSync(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func within(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if f() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return f()
}

// fileDigest is the SHA-256 of a file's content, to prove it was not
// written to.
func fileDigest(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
