package flexvol

import (
	"errors"
	"strings"
	"testing"
)

var testLimits = Limits{MinSize: 16 << 20, MaxSize: 16 << 40}

func TestParseOptions(t *testing.T) {
	cases := []struct {
		name string
		json string
		want Options
		err  string
	}{
		{"volumeID wins over the PV name", `{"volumeID":"data","kubernetes.io/pvOrVolumeName":"pv-1","size":"1Gi"}`,
			Options{Name: "data", Size: 1 << 30, FSType: "ext4"}, ""},
		{"the PV name is the fallback name", `{"kubernetes.io/pvOrVolumeName":"pv-1"}`,
			Options{Name: "pv-1", FSType: "ext4"}, ""},
		{"an empty fsType means ext4", `{"volumeID":"a","kubernetes.io/fsType":""}`, Options{Name: "a", FSType: "ext4"}, ""},
		{"xfs is accepted", `{"volumeID":"a","kubernetes.io/fsType":"xfs","size":"1Gi"}`, Options{Name: "a", FSType: "xfs", Size: 1 << 30}, ""},
		{"ro makes the mount read-only", `{"volumeID":"a","kubernetes.io/readwrite":"ro"}`, Options{Name: "a", FSType: "ext4", ReadOnly: true}, ""},
		{"decimal sizes are rounded up to 4 KiB", `{"volumeID":"a","size":"100M"}`, Options{Name: "a", FSType: "ext4", Size: 100003840}, ""},
		{"secrets are counted, never kept", `{"volumeID":"a","kubernetes.io/secret/key":"c2VjcmV0"}`, Options{Name: "a", FSType: "ext4", Secrets: 1}, ""},
		{"the pod is kept for the log", `{"volumeID":"a","kubernetes.io/pod.name":"p","kubernetes.io/pod.namespace":"ns"}`, Options{Name: "a", FSType: "ext4", PodName: "ns/p"}, ""},
		{"an unknown key is refused", `{"volumeID":"a","foo":"1"}`, Options{}, `unknown option "foo"`},
		{"a non-string value is refused", `{"volumeID":"a","size":1}`, Options{}, "must be a string"},
		{"null as a value is refused", `{"volumeID":null}`, Options{}, "must be a string"},
		{"a fractional byte below the minimum is refused", `{"volumeID":"a","size":"1m"}`, Options{}, "below the minimum"},
		{"an fsGroup above 2^31-1 is refused", `{"volumeID":"a","kubernetes.io/mounterArgs.FsGroup":"4294967296"}`, Options{}, "group ID"},
		{"a name longer than 253 bytes is refused", `{"volumeID":"` + strings.Repeat("a", 254) + `"}`, Options{}, "invalid volume name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseOptions(c.json, testLimits)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrBadOptions) {
					t.Fatalf("err = %v, want ErrBadOptions saying %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.FSGroup != nil {
				t.Fatalf("unexpected fsGroup %d", *got.FSGroup)
			}
			if got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestParseOptionsFSGroup(t *testing.T) {
	o, err := ParseOptions(`{"volumeID":"a","kubernetes.io/mounterArgs.FsGroup":"2000"}`, testLimits)
	if err != nil || o.FSGroup == nil || *o.FSGroup != 2000 {
		t.Fatalf("fsGroup: %v %v", o.FSGroup, err)
	}
}
