package flexvolume_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestHelperOutputNeverReachesTheAnswer runs the calls whose helpers print
// on stdout (xfs_growfs prints the geometry, e2fsck and resize2fs their
// progress, blkid what it found, mkfs.xfs its warnings) and checks the
// driver's stdout is exactly one JSON line and its stderr empty. The driver
// looks helpers up in fixed system directories, not on PATH, so a fake
// helper cannot be used here; pkg/volumes' TestHelpersNeverHoldStdout
// checks the one code path every helper takes with the real tools.
func TestHelperOutputNeverReachesTheAnswer(t *testing.T) {
	e := newEnv(t, nil)
	oneLine := func(what string, r result) {
		t.Helper()
		if strings.Count(r.stdout, "\n") != 1 || !strings.HasSuffix(r.stdout, "\n") || !strings.HasPrefix(r.stdout, "{") {
			t.Errorf("%s: stdout is not exactly one JSON line: %q", what, r.stdout)
		}
	}
	xfsPod := e.podDir("pod-xfs", "v")
	xfs := map[string]string{"size": "320Mi"}
	oneLine("mount (blkid, mkfs.xfs)", e.mustSucceed("mount", xfsPod, kubeletOptions("pv-xfs", false, "xfs", "", xfs)))
	oneLine("expandfs (xfs_growfs)", e.mustSucceed("expandfs", specOptions("pv-xfs", xfs), "", xfsPod, strconv.Itoa(640<<20), strconv.Itoa(320<<20)))
	oneLine("unmount", e.mustSucceed("unmount", xfsPod))

	extPod := e.podDir("pod-ext4", "v")
	ext := map[string]string{"size": "32Mi"}
	e.mustSucceed("mount", extPod, kubeletOptions("pv-ext4", false, "", "", ext))
	e.mustSucceed("unmount", extPod)
	oneLine("offline expandfs (e2fsck, resize2fs)", e.mustSucceed("expandfs", specOptions("pv-ext4", ext), "", extPod, strconv.Itoa(64<<20), strconv.Itoa(32<<20)))

	mbrPod := e.podDir("pod-mbr", "v")
	writeMBR(t, filepath.Join(e.stateDir, "volumes", "pv-mbr.img"), 32<<20)
	r := e.run("mount", mbrPod, kubeletOptions("pv-mbr", false, "", "", nil))
	if r.Status != "Failure" {
		t.Errorf("mount of a partitioned image: %s", r.Status)
	}
	oneLine("refused mount (blkid prints what it found)", r)
}
