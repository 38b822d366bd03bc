// Package mountinfo reads /proc/self/mountinfo. The Flexvolume driver keeps
// no reference counts of its own: who uses a volume is whatever the kernel's
// mount table says, which cannot drift from the truth after a crash.
//
// It only reads; mounting lives with the code that owns the mount.
package mountinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	Major, Minor uint32
	Root         string // the subtree of the filesystem mounted here
	MountPoint   string
	Options      string
	FSType       string
	Source       string
}

// ReadOnly reports whether this mount (not the superblock) is read-only.
func (m Mount) ReadOnly() bool {
	for _, o := range strings.Split(m.Options, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

// path is a variable so tests can parse a fixture.
var path = "/proc/self/mountinfo"

// Read returns every mount of the calling process's namespace.
func Read() ([]Mount, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return Parse(b)
}

// Parse parses mountinfo text (see proc(5)).
func Parse(b []byte) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("malformed mountinfo line %q", line)
		}
		maj, min, ok := strings.Cut(f[2], ":")
		if !ok {
			return nil, fmt.Errorf("malformed device %q in mountinfo", f[2])
		}
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("malformed device %q in mountinfo", f[2])
		}
		out = append(out, Mount{
			Major: uint32(ma), Minor: uint32(mi),
			Root:       unescape(f[3]),
			MountPoint: unescape(f[4]),
			Options:    f[5],
			FSType:     f[sep+1],
			Source:     unescape(f[sep+2]),
		})
	}
	return out, sc.Err()
}

// unescape undoes the kernel's octal escapes (\040 for space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// At returns the topmost mount at mountPoint and whether there is one.
func At(mounts []Mount, mountPoint string) (Mount, bool) {
	var found Mount
	ok := false
	for _, m := range mounts {
		if m.MountPoint == mountPoint {
			found, ok = m, true // later lines are mounted on top
		}
	}
	return found, ok
}

// OfDevice returns every mount of the device major:minor.
func OfDevice(mounts []Mount, major, minor uint32) []Mount {
	var out []Mount
	for _, m := range mounts {
		if m.Major == major && m.Minor == minor {
			out = append(out, m)
		}
	}
	return out
}
