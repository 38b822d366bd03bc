package flexvolume_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDeadlineKillsARunningHelper lets the mount deadline fire while
// mkfs.ext4 runs (a first mount of a multi-TiB sparse image, where mkfs
// takes seconds): the answer is one Failure naming the deadline and the
// helper, mkfs is killed rather than left running, and the next mount,
// with the normal deadline, formats the volume and converges.
//
// Where the deadline lands depends on the machine's speed, so the test
// adapts instead of asserting timings: a mount that finished in time gets a
// shorter deadline on a fresh volume, one that timed out before mkfs
// started gets a longer one, until the deadline fires with mkfs running.
func TestDeadlineKillsARunningHelper(t *testing.T) {
	e := newEnv(t, nil)
	timeout := 300 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if attempt == 8 {
			t.Fatalf("the deadline never fired while mkfs.ext4 ran in %d attempts", attempt)
		}
		vol := fmt.Sprintf("pv-deadline-%d", attempt)
		pod := e.podDir("pod-"+vol, "v")
		opts := kubeletOptions(vol, false, "", "", map[string]string{"size": "8Ti"})
		e.writeConfig(map[string]any{"timeouts": map[string]string{"mount": timeout.String()}})
		r, helper := e.runWatchingHelper("mkfs.ext4", "mount", pod, opts)
		t.Logf("attempt %d, deadline %v: %s %s; mkfs.ext4 seen running: %v", attempt, timeout, r.Status, r.Message, helper != 0)
		switch {
		case r.Status == "Success":
			e.mustSucceed("unmount", pod)
			timeout /= 2
			continue
		case helper == 0 || !strings.Contains(r.Message, "mkfs.ext4"):
			if !strings.Contains(r.Message, "deadline exceeded") {
				t.Fatalf("mount failed for another reason: %s", r.Message)
			}
			timeout *= 2
			continue
		}
		if !strings.Contains(r.Message, "deadline exceeded after "+timeout.String()) {
			t.Errorf("the Failure does not name the deadline: %s", r.Message)
		}
		if !within(5*time.Second, func() bool { return !isProcess(helper, "mkfs.ext4") }) {
			t.Errorf("mkfs.ext4 (pid %d) still runs after the driver answered", helper)
		}
		if _, ok := mountAt(t, pod); ok {
			t.Errorf("pod dir mounted after a timed-out mount")
		}
		e.assertReleased(vol)

		e.writeConfig(nil)
		e.mustSucceed("mount", pod, opts)
		if m, _ := mountAt(t, pod); m.FSType != "ext4" {
			t.Fatalf("after the retry the pod dir holds %q, want ext4", m.FSType)
		}
		writeFileSync(t, filepath.Join(pod, "f"), []byte("converged"))
		e.mustSucceed("unmount", pod)
		e.mustSucceed("mount", pod, kubeletOptions(vol, false, "", "", nil))
		if b, _ := os.ReadFile(filepath.Join(pod, "f")); string(b) != "converged" {
			t.Errorf("data after remount: %q", b)
		}
		e.mustSucceed("unmount", pod)
		e.assertReleased(vol)
		return
	}
}

// runWatchingHelper runs the driver like run and reports the pid of the
// first child named helper it saw running while the driver had not yet
// answered (0 if none).
func (e *env) runWatchingHelper(helper string, args ...string) (result, int) {
	e.t.Helper()
	cmd := exec.Command(e.exe, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	seen := 0
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(2 * time.Millisecond):
			if seen == 0 {
				seen = childNamed(cmd.Process.Pid, helper)
			}
		}
	}
	r := result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
	r.status = parseOne(e.t, r.stdout)
	if r.stderr != "" {
		e.t.Errorf("%v wrote to stderr: %q", args, r.stderr)
	}
	if (r.Status == "Success") != (r.code == 0) {
		e.t.Errorf("%v: status %q with exit code %d", args, r.Status, r.code)
	}
	return r, seen
}

// childNamed returns the pid of a child of parent whose command is name.
func childNamed(parent int, name string) int {
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || !isProcess(pid, name) {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after
		// its closing parenthesis.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(parent) {
			return pid
		}
	}
	return 0
}

// isProcess says whether pid is a live (not zombie) process named name.
func isProcess(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return false
	}
	f := strings.Fields(string(b[j+1:]))
	return string(b[i+1:j]) == name && len(f) > 0 && f[0] != "Z"
}
