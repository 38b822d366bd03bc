package install_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	pluginDir = "/var/lib/kubelet/volumeplugins"
	cniTarget = "/opt/cni/bin/drover"
	flexPath  = pluginDir + "/drover~local/local"
)

// hostSetup is a temp directory standing for the host's /, with a procfs
// holding a kubelet whose --volume-plugin-dir is pluginDir, so every install
// detects the directory the way it does on a node.
func hostSetup(t *testing.T) (host, proc string) {
	t.Helper()
	host, proc = t.TempDir(), t.TempDir()
	fakeKubelet(t, proc, "--config=/var/lib/kubelet/config.yaml", "--volume-plugin-dir="+pluginDir)
	return host, proc
}

func installArgs(host, proc, src string) []string {
	return []string{"install", "--host-root=" + host, "--proc-root=" + proc, "--source-dir=" + src}
}

// runTarget executes an installed file and returns the version it printed.
func runTarget(path string) (string, error) {
	out, err := exec.Command(path).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("exec %s: %w: %q", path, err, out)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "selfcheck ok ")
	if !ok {
		return "", fmt.Errorf("exec %s printed %q", path, out)
	}
	return v, nil
}

// TestReaderNeverRunsAPartialFile runs 100 installs of differing binaries,
// four at a time, while readers keep executing both targets: every exec
// must run a whole binary, one that some install wrote.
func TestReaderNeverRunsAPartialFile(t *testing.T) {
	const installs, workers = 100, 4
	host, proc := hostSetup(t)
	srcRoot := t.TempDir()
	// A first version, so readers never find the target missing.
	sourceDir(t, filepath.Join(srcRoot, "v000"), "v000", 0)
	if _, err := droverd(t, installArgs(host, proc, filepath.Join(srcRoot, "v000"))...); err != nil {
		t.Fatal(err)
	}

	var written sync.Map // version label -> true, recorded before its install starts
	written.Store("v000", true)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	type tally struct {
		runs     atomic.Int64
		versions sync.Map
		errs     chan error
	}
	targets := map[string]*tally{}
	for _, target := range []string{cniTarget, flexPath} {
		tl := &tally{errs: make(chan error, 10)}
		targets[target] = tl
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, err := runTarget(filepath.Join(host, target))
				if err == nil {
					name, label, _ := strings.Cut(v, "-")
					if _, ok := written.Load(label); !ok || name != filepath.Base(target) {
						err = fmt.Errorf("%s ran %q, which no install wrote there", target, v)
					}
				}
				if err != nil {
					select {
					case tl.errs <- err:
					default:
					}
					continue
				}
				tl.runs.Add(1)
				tl.versions.Store(v, true)
			}
		}()
	}

	work := make(chan int)
	var installers sync.WaitGroup
	installErrs := make(chan error, installs)
	for range workers {
		installers.Add(1)
		go func() {
			defer installers.Done()
			for i := range work {
				label := fmt.Sprintf("v%03d", i)
				src := filepath.Join(srcRoot, label)
				// Sizes differ by up to ~1 MiB, so a partial file cannot pass
				// for a whole one of another version.
				if err := writeSource(src, label, (i*7919)%(1<<20)); err != nil {
					installErrs <- err
					continue
				}
				written.Store(label, true)
				if _, err := droverd(t, installArgs(host, proc, src)...); err != nil {
					installErrs <- err
				}
				os.RemoveAll(src)
			}
		}()
	}
	start := time.Now()
	for i := 1; i <= installs; i++ {
		work <- i
	}
	close(work)
	installers.Wait()
	// Let the readers see the final state too.
	time.Sleep(200 * time.Millisecond)
	close(stop)
	readers.Wait()
	close(installErrs)
	for err := range installErrs {
		t.Error(err)
	}
	for target, tl := range targets {
		close(tl.errs)
		for err := range tl.errs {
			t.Errorf("reader of %s: %v", target, err)
		}
		n := 0
		tl.versions.Range(func(any, any) bool { n++; return true })
		t.Logf("%s: %d execs saw %d versions during %d installs in %s", target, tl.runs.Load(), n, installs, time.Since(start).Round(time.Millisecond))
		// The test proves nothing unless reads overlapped many installs.
		if tl.runs.Load() < 20 || n < 3 {
			t.Errorf("%s: only %d execs over %d versions: the readers did not overlap the installs", target, tl.runs.Load(), n)
		}
	}
	for _, dir := range []string{filepath.Dir(cniTarget), filepath.Dir(flexPath)} {
		if names := listDir(t, filepath.Join(host, dir)); len(names) != 1 {
			t.Errorf("%s holds %q after the installs, want only the executable", dir, names)
		}
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// fileState is what a rewrite would change.
type fileState struct {
	ino          uint64
	size         int64
	mode         fs.FileMode
	mtime, ctime int64
}

// snapshot records every file and directory under root.
func snapshot(t *testing.T, root string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		out[strings.TrimPrefix(path, root)] = fileState{st.Ino, info.Size(), info.Mode(), st.Mtim.Nano(), st.Ctim.Nano()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInstall(t *testing.T) {
	tests := []struct {
		name string
		// extra flags; the host gets a kubelet with --volume-plugin-dir
		// unless noKubelet
		flags     []string
		noKubelet bool
		hostDirs  []string
		wantFlex  string
		wantOut   string
	}{
		{
			name:     "the Flexvolume driver goes where the running kubelet's --volume-plugin-dir says",
			wantFlex: flexPath,
			wantOut:  "kubelet (pid 4242) --volume-plugin-dir",
		},
		{
			name:     "--plugin-dir overrides the detection",
			flags:    []string{"--plugin-dir=/etc/kubernetes/volumeplugins"},
			wantFlex: "/etc/kubernetes/volumeplugins/drover~local/local",
			wantOut:  "set by flag",
		},
		{
			name:      "without a visible kubelet a known distribution directory that exists is used",
			noKubelet: true,
			hostDirs:  []string{"/home/kubernetes/flexvolume"},
			wantFlex:  "/home/kubernetes/flexvolume/drover~local/local",
			wantOut:   "GKE",
		},
		{
			name:      "without a kubelet or a known directory, kubelet's default is created",
			noKubelet: true,
			wantFlex:  "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/drover~local/local",
		},
		{
			name:     "--cni-bin-dir moves the CNI plugin",
			flags:    []string{"--cni-bin-dir=/usr/libexec/cni"},
			wantFlex: flexPath,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, proc := t.TempDir(), t.TempDir()
			if !tt.noKubelet {
				fakeKubelet(t, proc, "--volume-plugin-dir", pluginDir)
			}
			for _, d := range tt.hostDirs {
				if err := os.MkdirAll(filepath.Join(host, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			src := filepath.Join(t.TempDir(), "bin")
			sourceDir(t, src, "v1", 100)
			args := append(installArgs(host, proc, src), tt.flags...)
			out, err := droverd(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("output %q does not say %q", out, tt.wantOut)
			}
			cni := cniTarget
			for _, f := range tt.flags {
				if d, ok := strings.CutPrefix(f, "--cni-bin-dir="); ok {
					cni = d + "/drover"
				}
			}
			for target, want := range map[string]string{cni: "drover-v1", tt.wantFlex: "local-v1"} {
				info, err := os.Stat(filepath.Join(host, target))
				if err != nil {
					t.Fatalf("%s not installed: %v\noutput: %s", target, err, out)
				}
				if info.Mode().Perm() != 0o755 {
					t.Errorf("%s has mode %v, want 0755", target, info.Mode().Perm())
				}
				if v, err := runTarget(filepath.Join(host, target)); err != nil || v != want {
					t.Errorf("%s runs as %q (%v), want %q", target, v, err, want)
				}
				if !strings.Contains(out, "installed "+target) {
					t.Errorf("output %q does not report %s", out, target)
				}
			}

			// The init container runs on every pod start: the second time
			// nothing on the host may change, not even a timestamp.
			before := snapshot(t, host)
			out, err = droverd(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Count(out, "unchanged ") != 2 || strings.Contains(out, "installed ") {
				t.Errorf("second install said %q, want both files unchanged", out)
			}
			after := snapshot(t, host)
			if fmt.Sprint(before) != fmt.Sprint(after) {
				t.Errorf("second install changed the host:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestInstallFailsClearly(t *testing.T) {
	tests := []struct {
		name      string
		srcSub    string // appended to the source dir; "nope" is missing
		pluginDir string // --plugin-dir; empty: detect from the kubelet
		extra     []string
		// configOnly: the kubelet names its directory only in a config file
		// that is missing
		configOnly bool
		want       string
	}{
		{name: "a missing source executable fails the install", srcSub: "nope", pluginDir: pluginDir, want: "open source"},
		{name: "an unreadable kubelet config fails rather than guessing", configOnly: true, want: "config.yaml"},
		{name: "a relative plugin dir is refused", pluginDir: "var/lib/flex", want: "not an absolute host path"},
		{name: "stray arguments are refused", pluginDir: pluginDir, extra: []string{"extra"}, want: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, proc := hostSetup(t)
			if tt.configOnly {
				fakeKubelet(t, proc, "--config=/var/lib/kubelet/config.yaml")
			}
			src := filepath.Join(t.TempDir(), "bin")
			sourceDir(t, src, "v1", 0)
			args := installArgs(host, proc, filepath.Join(src, tt.srcSub))
			if tt.pluginDir != "" {
				args = append(args, "--plugin-dir="+tt.pluginDir)
			}
			_, err := droverd(t, append(args, tt.extra...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("droverd error = %v, want one containing %q", err, tt.want)
			}
			if _, err := os.Stat(filepath.Join(host, cniTarget)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a failed install left %s (%v)", cniTarget, err)
			}
		})
	}
}
