package mountinfo

import "testing"

const fixture = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
42 22 7:0 / /var/lib/drover/mounts/v1 rw,nosuid,nodev,relatime shared:2 - ext4 /dev/loop0 rw
43 22 7:0 / /var/lib/kubelet/pods/u/volumes/drover~local/with\040space ro,relatime - ext4 /dev/loop0 rw
44 22 0:5 / /tmp rw - tmpfs tmpfs rw
45 44 0:6 / /tmp rw - tmpfs tmpfs rw
`

func TestParse(t *testing.T) {
	ms, err := Parse([]byte(fixture))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 5 {
		t.Fatalf("parsed %d mounts", len(ms))
	}
	cases := []struct {
		name string
		got  any
		want any
	}{
		{"optional fields before the separator are skipped", ms[1].FSType, "ext4"},
		{"the source follows the fstype", ms[1].Source, "/dev/loop0"},
		{"octal escapes are undone", ms[2].MountPoint, "/var/lib/kubelet/pods/u/volumes/drover~local/with space"},
		{"ro is the per-mount flag", ms[2].ReadOnly(), true},
		{"rw mounts are not read-only", ms[1].ReadOnly(), false},
		{"device numbers are parsed", [2]uint32{ms[1].Major, ms[1].Minor}, [2]uint32{7, 0}},
		{"OfDevice finds every mount of a device", len(OfDevice(ms, 7, 0)), 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
	t.Run("At returns the topmost of stacked mounts", func(t *testing.T) {
		m, ok := At(ms, "/tmp")
		if !ok || m.Minor != 6 {
			t.Errorf("got %+v %v", m, ok)
		}
		if _, ok := At(ms, "/nope"); ok {
			t.Errorf("found a mount at /nope")
		}
	})
	t.Run("a malformed line is an error", func(t *testing.T) {
		if _, err := Parse([]byte("1 2 3\n")); err == nil {
			t.Error("no error")
		}
	})
}
