package flexvol

import (
	"strings"
	"testing"

	"github.com/drover-net/drover/pkg/volumes"
)

// FuzzParseOptions: whatever kubelet (or anyone) passes, the parser answers
// without panicking; an accepted object always yields a safe volume name, a
// known fsType and a size within limits; and no message ever quotes a
// secret's value. The seed corpus (f.Add plus testdata/fuzz) runs with the
// normal tests.
func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `[]`, `"x"`, `{"volumeID":"a"}`,
		`{"volumeID":"data","size":"1Gi","kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"ro"}`,
		`{"kubernetes.io/pvOrVolumeName":"pv-1","kubernetes.io/mounterArgs.FsGroup":"1000","kubernetes.io/pod.name":"p"}`,
		`{"volumeID":"../x"}`, `{"volumeID":"a","size":"-1"}`, `{"volumeID":"a","size":"1e30"}`,
		`{"volumeID":"a","kubernetes.io/secret/k":"SECRETVALUE1234"}`,
		`{"volumeID":"a","kubernetes.io/secret/k":5}`, `{"volumeID":"a"} x`, `{"volumeID":"a","size":"0.5Ki"}`,
		`{"volumeID":"a","unknown":"SECRETVALUE1234"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		o, err := ParseOptions(raw, testLimits)
		if err != nil {
			if strings.Contains(raw, "SECRETVALUE1234") && strings.Contains(err.Error(), "SECRETVALUE1234") &&
				strings.Contains(raw, `"kubernetes.io/secret/`) {
				t.Fatalf("message quotes a secret: %v", err)
			}
			return
		}
		if volumes.ValidName(o.Name) != nil || strings.Contains(o.Name, "/") || strings.Contains(o.Name, "..") {
			t.Fatalf("accepted unsafe name %q", o.Name)
		}
		if o.FSType != "ext4" && o.FSType != "xfs" {
			t.Fatalf("accepted fsType %q", o.FSType)
		}
		if o.Size != 0 && (o.Size < testLimits.MinSize || o.Size > testLimits.MaxSize || o.Size%4096 != 0) {
			t.Fatalf("accepted size %d", o.Size)
		}
	})
}
