package plugindir

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeProc is one process in a fake procfs: its argv, files under its root
// (as the process sees them), and its working directory.
type fakeProc struct {
	pid   int
	argv  []string
	raw   string            // cmdline as written, when argv is not enough
	files map[string]string // path in the process's root -> content
	cwd   string
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeProc builds a procfs under proc. A real /proc/PID/root is a magic
// link to the process's root; a directory reads the same way.
func makeProc(t *testing.T, proc string, p fakeProc) {
	t.Helper()
	dir := filepath.Join(proc, strconv.Itoa(p.pid))
	cmdline := p.raw
	if cmdline == "" {
		cmdline = strings.Join(p.argv, "\x00") + "\x00"
	}
	writeFile(t, filepath.Join(dir, "cmdline"), cmdline)
	for path, content := range p.files {
		writeFile(t, filepath.Join(dir, "root", path), content)
	}
	cwd := p.cwd
	if cwd == "" {
		cwd = "/"
	}
	// cwd is a link whose target is the path as the process sees it; the
	// fake resolves it through the process's root so relative reads work.
	if err := os.MkdirAll(filepath.Join(dir, "root", cwd), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "root", cwd), filepath.Join(dir, "cwd")); err != nil {
		t.Fatal(err)
	}
}

func TestPluginDir(t *testing.T) {
	kubeletCfg := func(dir string) string {
		return "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nvolumePluginDir: " + dir + "\n"
	}
	tests := []struct {
		name     string
		procs    []fakeProc
		hostDirs []string // directories that exist on the host
		hostFile map[string]string
		want     string
		source   string // a substring of Detection.Source
		wantErr  string
	}{
		{
			name:   "kubelet's --volume-plugin-dir=DIR wins over its config file",
			procs:  []fakeProc{{pid: 812, argv: []string{"/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml", "--volume-plugin-dir=/var/lib/kubelet/volumeplugins"}, files: map[string]string{"/var/lib/kubelet/config.yaml": kubeletCfg("/from/config")}}},
			want:   "/var/lib/kubelet/volumeplugins",
			source: "--volume-plugin-dir",
		},
		{
			name:  "kubelet's --volume-plugin-dir DIR as two arguments is read",
			procs: []fakeProc{{pid: 9, argv: []string{"kubelet", "--v=2", "--volume-plugin-dir", "/etc/kubernetes/volumeplugins"}}},
			want:  "/etc/kubernetes/volumeplugins",
		},
		{
			name:  "the last --volume-plugin-dir wins, as in kubelet's flag parser",
			procs: []fakeProc{{pid: 9, argv: []string{"kubelet", "--volume-plugin-dir=/first", "--volume-plugin-dir", "/second"}}},
			want:  "/second",
		},
		{
			name:   "volumePluginDir of kubelet's --config file is read through the kubelet's root",
			procs:  []fakeProc{{pid: 40, argv: []string{"/usr/local/bin/kubelet", "--config", "/var/lib/kubelet/config.yaml"}, files: map[string]string{"/var/lib/kubelet/config.yaml": kubeletCfg("/home/kubernetes/flexvolume")}}},
			want:   "/home/kubernetes/flexvolume",
			source: "config /var/lib/kubelet/config.yaml",
		},
		{
			name:  "a JSON kubelet config is read",
			procs: []fakeProc{{pid: 40, argv: []string{"kubelet", "--config=/etc/kubelet.json"}, files: map[string]string{"/etc/kubelet.json": `{"kind":"KubeletConfiguration","volumePluginDir":"/opt/flex"}`}}},
			want:  "/opt/flex",
		},
		{
			name:  "a relative --config is read against the kubelet's working directory",
			procs: []fakeProc{{pid: 41, argv: []string{"kubelet", "--config=config.yaml"}, cwd: "/var/lib/kubelet", files: map[string]string{"/var/lib/kubelet/config.yaml": kubeletCfg("/var/lib/kubelet/volumeplugins")}}},
			want:  "/var/lib/kubelet/volumeplugins",
		},
		{
			name:  "a relative volumePluginDir in the config file is resolved against the file's directory",
			procs: []fakeProc{{pid: 44, argv: []string{"kubelet", "--config=/etc/kubernetes/kubelet/config.yaml"}, cwd: "/", files: map[string]string{"/etc/kubernetes/kubelet/config.yaml": kubeletCfg("flex")}}},
			want:  "/etc/kubernetes/kubelet/flex",
		},
		{
			name: "a relative volumePluginDir in a drop-in is resolved against the drop-in's directory",
			procs: []fakeProc{{pid: 45, argv: []string{"kubelet", "--config=/etc/k/config.yaml", "--config-dir=/etc/k/conf.d"}, files: map[string]string{
				"/etc/k/config.yaml":         kubeletCfg("/from/config"),
				"/etc/k/conf.d/10-flex.conf": kubeletCfg("../plugins"),
			}}},
			want: "/etc/k/plugins",
		},
		{
			name:     "a config file kubelet's root lacks is read from the host root",
			procs:    []fakeProc{{pid: 42, argv: []string{"kubelet", "--config=/etc/kubernetes/kubelet.yaml"}}},
			hostFile: map[string]string{"/etc/kubernetes/kubelet.yaml": kubeletCfg("/etc/kubernetes/volumeplugins")},
			want:     "/etc/kubernetes/volumeplugins",
		},
		{
			name: "a --config-dir drop-in overrides the config file, later files last",
			procs: []fakeProc{{pid: 43, argv: []string{"kubelet", "--config=/etc/k/config.yaml", "--config-dir=/etc/k/conf.d"}, files: map[string]string{
				"/etc/k/config.yaml":           kubeletCfg("/from/config"),
				"/etc/k/conf.d/10-flex.conf":   kubeletCfg("/from/10"),
				"/etc/k/conf.d/20-flex.conf":   kubeletCfg("/from/20"),
				"/etc/k/conf.d/30-other.conf":  "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 50\n",
				"/etc/k/conf.d/99-ignored.txt": kubeletCfg("/not/a/conf"),
			}}},
			want:   "/from/20",
			source: "20-flex.conf",
		},
		{
			name:     "a kubelet that sets no directory uses kubelet's default, even when a known directory exists",
			procs:    []fakeProc{{pid: 7, argv: []string{"kubelet", "--config=/c.yaml"}, files: map[string]string{"/c.yaml": "kind: KubeletConfiguration\n"}}},
			hostDirs: []string{"/var/lib/kubelet/volumeplugins"},
			want:     DefaultPluginDir,
			source:   "its default",
		},
		{
			name:  "a relative --volume-plugin-dir is resolved against the kubelet's working directory",
			procs: []fakeProc{{pid: 8, argv: []string{"kubelet", "--volume-plugin-dir=plugins"}, cwd: "/srv/kubelet"}},
			want:  "SUFFIX:/srv/kubelet/plugins",
		},
		{
			name:  "hyperkube's kubelet is recognised",
			procs: []fakeProc{{pid: 5, argv: []string{"/hyperkube", "kubelet", "--volume-plugin-dir=/var/lib/kubelet/volumeplugins"}}},
			want:  "/var/lib/kubelet/volumeplugins",
		},
		{
			name:  "k3s passes the directory with --kubelet-arg",
			procs: []fakeProc{{pid: 5, argv: []string{"/usr/local/bin/k3s", "agent", "--kubelet-arg", "volume-plugin-dir=/var/lib/rancher/flex", "--kubelet-arg=max-pods=50"}}},
			want:  "/var/lib/rancher/flex",
		},
		{
			name:  "a space-separated rewritten title is read",
			procs: []fakeProc{{pid: 5, raw: "/usr/bin/kubelet --volume-plugin-dir=/spaced/dir"}},
			want:  "/spaced/dir",
		},
		{
			name: "processes that only mention kubelet are not the kubelet, and the lowest kubelet PID wins",
			procs: []fakeProc{
				{pid: 3, argv: []string{"grep", "kubelet", "--volume-plugin-dir=/wrong/grep"}},
				{pid: 4, argv: []string{"/usr/bin/kubelet-wrapper", "--volume-plugin-dir=/wrong/wrapper"}},
				{pid: 30, argv: []string{"kubelet", "--volume-plugin-dir=/wrong/later"}},
				{pid: 20, argv: []string{"kubelet", "--volume-plugin-dir=/right"}},
			},
			want: "/right",
		},
		{
			name:     "without a kubelet the first existing known directory wins (GKE over the default)",
			procs:    []fakeProc{{pid: 1, argv: []string{"/sbin/init"}}},
			hostDirs: []string{"/home/kubernetes/flexvolume", DefaultPluginDir},
			want:     "/home/kubernetes/flexvolume",
			source:   "GKE",
		},
		{
			name:     "without a kubelet a known path that is a file does not count",
			hostFile: map[string]string{"/var/lib/kubelet/volumeplugins": "not a dir"},
			hostDirs: []string{"/etc/kubernetes/volumeplugins"},
			want:     "/etc/kubernetes/volumeplugins",
		},
		{
			name:   "without a kubelet or any known directory, kubelet's default",
			want:   DefaultPluginDir,
			source: "no kubelet process seen",
		},
		{
			name:    "a kubelet config that cannot be read is an error, not a guess",
			procs:   []fakeProc{{pid: 9, argv: []string{"kubelet", "--config=/missing.yaml"}}},
			wantErr: "missing.yaml",
		},
		{
			name:    "a kubelet config that does not parse is an error",
			procs:   []fakeProc{{pid: 9, argv: []string{"kubelet", "--config=/bad.yaml"}, files: map[string]string{"/bad.yaml": "volumePluginDir: [unclosed"}}},
			wantErr: "parse kubelet configuration",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc, host := t.TempDir(), t.TempDir()
			for _, p := range tt.procs {
				makeProc(t, proc, p)
			}
			// A non-PID entry, as in the real /proc.
			writeFile(t, filepath.Join(proc, "meminfo"), "")
			for _, d := range tt.hostDirs {
				if err := os.MkdirAll(filepath.Join(host, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for p, c := range tt.hostFile {
				writeFile(t, filepath.Join(host, p), c)
			}
			got, err := Detector{ProcRoot: proc, HostRoot: host}.PluginDir()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("PluginDir() = %+v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("PluginDir(): %v", err)
			}
			if suffix, ok := strings.CutPrefix(tt.want, "SUFFIX:"); ok {
				// The fake cwd link points into the temp dir.
				if !strings.HasSuffix(got.Dir, suffix) {
					t.Errorf("Dir = %q, want it to end in %q", got.Dir, suffix)
				}
			} else if got.Dir != tt.want {
				t.Errorf("Dir = %q, want %q (source %q)", got.Dir, tt.want, got.Source)
			}
			if !strings.Contains(got.Source, tt.source) {
				t.Errorf("Source = %q, want it to mention %q", got.Source, tt.source)
			}
		})
	}
}

func TestPluginDirFailsWithoutProcfs(t *testing.T) {
	_, err := Detector{ProcRoot: filepath.Join(t.TempDir(), "nope")}.PluginDir()
	if err == nil || !strings.Contains(err.Error(), "list processes") {
		t.Fatalf("PluginDir() error = %v, want one naming the unreadable procfs", err)
	}
}
