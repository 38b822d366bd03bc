package install

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Ino
}

// dirNames lists a directory, dot-files included.
func dirNames(t *testing.T, dir string) []string {
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

func TestCopyFile(t *testing.T) {
	tests := []struct {
		name        string
		existing    string // content already at dst; "" = none
		mode        os.FileMode
		src         string
		wantChanged bool
		sameInode   bool // dst must be the very same file afterwards
	}{
		{name: "a new file is written executable", src: "v1", wantChanged: true},
		{name: "an identical file is left alone, inode and all", existing: "v1", mode: Mode, src: "v1", wantChanged: false, sameInode: true},
		{name: "a file with other content is replaced by a new inode", existing: "v1", mode: Mode, src: "v2", wantChanged: true},
		{name: "same content but not executable is rewritten with 0755", existing: "v1", mode: 0o644, src: "v1", wantChanged: true},
		{name: "a longer old file is replaced, not overwritten in place", existing: "v1-and-much-longer", mode: Mode, src: "v1", wantChanged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			writeFile(t, src, tt.src)
			dst := filepath.Join(dir, "host", "opt", "cni", "bin", "drover")
			var before uint64
			if tt.existing != "" {
				writeFile(t, dst, tt.existing)
				if err := os.Chmod(dst, tt.mode); err != nil {
					t.Fatal(err)
				}
				before = inode(t, dst)
			}
			changed, err := CopyFile(src, dst)
			if err != nil {
				t.Fatalf("CopyFile: %v", err)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			got, err := os.ReadFile(dst)
			if err != nil || string(got) != tt.src {
				t.Fatalf("dst holds %q (%v), want %q", got, err, tt.src)
			}
			info, _ := os.Stat(dst)
			if info.Mode().Perm() != Mode {
				t.Errorf("mode %v, want %v", info.Mode().Perm(), Mode)
			}
			if after := inode(t, dst); tt.existing != "" && (after == before) != tt.sameInode {
				t.Errorf("inode before %d after %d; want same=%v", before, after, tt.sameInode)
			}
			if names := dirNames(t, filepath.Dir(dst)); len(names) != 1 {
				t.Errorf("directory holds %q, want only the installed file", names)
			}
		})
	}
}

func TestCopyFileFailuresLeaveNothing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) (src, dst string)
		want  string
	}{
		{
			name: "a missing source writes nothing",
			setup: func(t *testing.T, dir string) (string, string) {
				return filepath.Join(dir, "absent"), filepath.Join(dir, "out", "drover")
			},
			want: "open source",
		},
		{
			name: "a target directory that is a file fails before any temp file",
			setup: func(t *testing.T, dir string) (string, string) {
				writeFile(t, filepath.Join(dir, "src"), "bin")
				writeFile(t, filepath.Join(dir, "out"), "a file where the directory should be")
				return filepath.Join(dir, "src"), filepath.Join(dir, "out", "drover")
			},
			want: "not a directory",
		},
		{
			name: "a target that is a directory keeps it and leaves no temp file",
			setup: func(t *testing.T, dir string) (string, string) {
				writeFile(t, filepath.Join(dir, "src"), "bin")
				writeFile(t, filepath.Join(dir, "out", "drover", "keep"), "x")
				return filepath.Join(dir, "src"), filepath.Join(dir, "out", "drover")
			},
			want: "rename",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := tt.setup(t, dir)
			if _, err := CopyFile(src, dst); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CopyFile error = %v, want one containing %q", err, tt.want)
			}
			if entries, err := os.ReadDir(filepath.Dir(dst)); err == nil {
				for _, e := range entries {
					if strings.HasPrefix(e.Name(), ".") {
						t.Errorf("temp file %s left behind", e.Name())
					}
				}
			}
		})
	}
}

func TestCopyFileRemovesOnlyStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, src, "new")
	bin := filepath.Join(dir, "bin")
	stale := filepath.Join(bin, ".drover.tmp-111")
	fresh := filepath.Join(bin, ".drover.tmp-222")
	other := filepath.Join(bin, ".portmap.tmp-333")
	for _, p := range []string{stale, fresh, other} {
		writeFile(t, p, "partial")
	}
	old := time.Now().Add(-2 * staleAfter)
	for _, p := range []string{stale, other} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := CopyFile(src, filepath.Join(bin, "drover")); err != nil {
		t.Fatal(err)
	}
	want := []string{".drover.tmp-222", ".portmap.tmp-333", "drover"}
	if got := dirNames(t, bin); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("directory holds %q, want %q: an interrupted install's old temp file goes, a running one's and other files stay", got, want)
	}
}

func TestCopyFileLargeBinary(t *testing.T) {
	dir := t.TempDir()
	content := bytes.Repeat([]byte("drover-binary-"), 1<<18) // 3.5 MiB, more than one copy buffer
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, content, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst")
	for i, want := range []bool{true, false} {
		changed, err := CopyFile(src, dst)
		if err != nil || changed != want {
			t.Fatalf("copy %d: changed=%v err=%v, want changed=%v", i+1, changed, err, want)
		}
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("dst differs from src (%d vs %d bytes, %v)", len(got), len(content), err)
	}
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
