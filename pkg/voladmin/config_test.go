package voladmin

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// installDriver lays out pluginDir/drover~local with a driver config naming
// stateDir, as an installer and an admin would ("" writes no config).
func installDriver(t *testing.T, pluginDir, stateDir string) string {
	t.Helper()
	dir := filepath.Join(pluginDir, "drover~local")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "local"), []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if stateDir == "" {
		return ""
	}
	file := filepath.Join(dir, "drover-local.json")
	if err := os.WriteFile(file, []byte(`{"stateDir":"`+stateDir+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func noEnv(string) string { return "" }

func TestChooseStateDir(t *testing.T) {
	root := t.TempDir()
	kubeletDir := filepath.Join(root, "kubelet-flag")    // what a running kubelet uses
	rancher := filepath.Join(root, "var/lib/kubelet/vp") // a known distribution dir
	other := filepath.Join(root, "other")
	defer func(f func() []string) { pluginDirs = f }(pluginDirs)
	pluginDirs = func() []string { return []string{kubeletDir, rancher, filepath.Join(root, "missing")} }

	cases := []struct {
		name    string
		setup   func(t *testing.T)
		flags   flags
		env     map[string]string
		want    string
		source  string // substring of the reported source
		wantErr string
	}{
		{name: "no driver config anywhere means the driver's default, saying what was searched",
			want: "/var/lib/drover", source: "the driver's default: no drover~local/drover-local.json in " + kubeletDir},
		{name: "the config beside the installed driver in a known plugin dir is used",
			setup: func(t *testing.T) { installDriver(t, rancher, "/srv/drover") },
			want:  "/srv/drover", source: filepath.Join(rancher, "drover~local", "drover-local.json")},
		{name: "configs in two plugin dirs naming the same state dir agree",
			setup: func(t *testing.T) {
				installDriver(t, kubeletDir, "/srv/drover")
				installDriver(t, rancher, "/srv/drover")
			},
			want: "/srv/drover", source: filepath.Join(kubeletDir, "drover~local")},
		{name: "configs in two plugin dirs that disagree are an error naming both",
			setup:   func(t *testing.T) { installDriver(t, kubeletDir, "/srv/a"); installDriver(t, rancher, "/srv/b") },
			wantErr: "disagree"},
		{name: "--plugin-dir picks the config beside the driver there over the search",
			setup: func(t *testing.T) { installDriver(t, rancher, "/srv/rancher"); installDriver(t, other, "/srv/other") },
			flags: flags{pluginDir: other}, want: "/srv/other", source: filepath.Join(other, "drover~local", "drover-local.json")},
		{name: "--plugin-dir with a driver but no config is the driver's default",
			setup: func(t *testing.T) { installDriver(t, other, "") },
			flags: flags{pluginDir: other}, want: "/var/lib/drover", source: "the driver's default"},
		{name: "--plugin-dir without the driver is an error",
			flags: flags{pluginDir: other}, wantErr: "no drover~local driver directory"},
		{name: "--config wins over --plugin-dir",
			setup: func(t *testing.T) {
				installDriver(t, other, "/srv/other")
				os.WriteFile(filepath.Join(root, "c.json"), []byte(`{"stateDir":"/srv/c"}`), 0o644)
			},
			flags: flags{config: filepath.Join(root, "c.json"), pluginDir: other}, want: "/srv/c", source: "--config"},
		{name: "a missing --config is an error, not the default",
			flags: flags{config: filepath.Join(root, "nope.json")}, wantErr: "no such file"},
		{name: "$DROVER_LOCAL_CONFIG wins over the search",
			setup: func(t *testing.T) {
				installDriver(t, rancher, "/srv/rancher")
				os.WriteFile(filepath.Join(root, "e.json"), []byte(`{"stateDir":"/srv/e"}`), 0o644)
			},
			env: map[string]string{"DROVER_LOCAL_CONFIG": filepath.Join(root, "e.json")}, want: "/srv/e", source: "$DROVER_LOCAL_CONFIG"},
		{name: "$DROVER_LOCAL_STATE_DIR wins over the file, as in the driver",
			setup: func(t *testing.T) { installDriver(t, rancher, "/srv/rancher") },
			env:   map[string]string{"DROVER_LOCAL_STATE_DIR": "/srv/env"}, want: "/srv/env", source: "$DROVER_LOCAL_STATE_DIR"},
		{name: "--state-dir wins over everything",
			setup: func(t *testing.T) { installDriver(t, rancher, "/srv/rancher") },
			flags: flags{stateDir: "/srv/flag", pluginDir: rancher}, want: "/srv/flag", source: "--state-dir"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, d := range []string{kubeletDir, rancher, other} {
				os.RemoveAll(d)
			}
			if c.setup != nil {
				c.setup(t)
			}
			ch, err := chooseStateDir(c.flags, func(k string) string { return c.env[k] })
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %+v, %v; want an error saying %q", ch, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ch.dir != c.want || !strings.Contains(ch.source, c.source) {
				t.Errorf("got %s from %q, want %s from something saying %q", ch.dir, ch.source, c.want, c.source)
			}
		})
	}
}

// TestListCreatesNothing: listing a state dir that does not exist prints an
// empty list, says which directory it looked at, and leaves no directory.
func TestListCreatesNothing(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "state")
	defer func(f func() []string) { pluginDirs = f }(pluginDirs)
	pluginDirs = func() []string { return []string{filepath.Join(root, "plugins")} }
	installDriver(t, filepath.Join(root, "plugins"), state)
	for _, args := range [][]string{{"list"}, {"-o", "json", "list"}, {"sweep"}, {"delete", "pv-x"}} {
		var out, errb bytes.Buffer
		code := Main(args, &out, &errb, noEnv)
		want := 0
		if args[0] == "delete" {
			want = 1 // not found
		}
		if code != want {
			t.Errorf("%v: exit %d: %s %s", args, code, out.String(), errb.String())
		}
		if !strings.Contains(out.String()+errb.String(), "state dir "+state+" (from "+filepath.Join(root, "plugins", "drover~local", "drover-local.json")+")") {
			t.Errorf("%v does not say which state dir it uses: %q %q", args, out.String(), errb.String())
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Fatalf("%v created %s: %v", args, state, err)
		}
	}
	var out bytes.Buffer
	Main([]string{"-o", "json", "list"}, &out, &bytes.Buffer{}, noEnv)
	if strings.TrimSpace(out.String()) != "[]" {
		t.Errorf("json list of an empty node: %q, want []", out.String())
	}
}
