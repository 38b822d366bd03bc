package flexvolume_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/drover-net/drover/pkg/loopdev"
)

// TestConcurrentCalls runs 20 mounts at once on one volume and 20 on 20
// volumes, then 20 unmounts of each at once: every call succeeds, one image
// never gets a second loop device, every pod dir ends up mounted, and all
// of it is released at the end.
func TestConcurrentCalls(t *testing.T) {
	const n = 20
	e := newEnv(t, nil)
	shared := make([]string, n)
	own := make([]string, n)
	for i := 0; i < n; i++ {
		shared[i] = e.podDir(fmt.Sprintf("shared-%d", i), "v")
		own[i] = e.podDir(fmt.Sprintf("own-%d", i), "v")
	}
	each := func(f func(i int, shared bool) result) {
		var wg sync.WaitGroup
		results := make([]result, 2*n)
		for i := 0; i < n; i++ {
			wg.Add(2)
			go func(i int) { defer wg.Done(); results[i] = f(i, true) }(i)
			go func(i int) { defer wg.Done(); results[n+i] = f(i, false) }(i)
		}
		wg.Wait()
		for i, r := range results {
			if r.Status != "Success" {
				t.Errorf("call %d: %s: %s", i, r.Status, r.Message)
			}
		}
	}
	each(func(i int, sh bool) result {
		if sh {
			return e.run("mount", shared[i], kubeletOptions("pv-shared", i%2 == 1, "", "", map[string]string{"size": "64Mi"}))
		}
		return e.run("mount", own[i], kubeletOptions(fmt.Sprintf("pv-own-%d", i), false, "", "", map[string]string{"size": "32Mi"}))
	})
	if t.Failed() {
		t.FailNow()
	}
	if loops := e.loopsOf("pv-shared"); len(loops) != 1 {
		t.Errorf("shared volume has loop devices %v, want exactly one", loops)
	}
	first, _ := mountAt(t, shared[0])
	for i := 0; i < n; i++ {
		m, ok := mountAt(t, shared[i])
		if !ok || m.Major != first.Major || m.Minor != first.Minor || m.ReadOnly() != (i%2 == 1) {
			t.Errorf("shared pod %d: mount %+v (mounted %v)", i, m, ok)
		}
		if _, ok := mountAt(t, own[i]); !ok {
			t.Errorf("pod of volume pv-own-%d lost its mount", i)
		}
		if loops := e.loopsOf(fmt.Sprintf("pv-own-%d", i)); len(loops) != 1 {
			t.Errorf("volume pv-own-%d has loop devices %v", i, loops)
		}
	}
	each(func(i int, sh bool) result {
		if sh {
			return e.run("unmount", shared[i])
		}
		return e.run("unmount", own[i])
	})
	e.assertReleased("pv-shared")
	for i := 0; i < n; i++ {
		e.assertReleased(fmt.Sprintf("pv-own-%d", i))
		if _, ok := mountAt(t, shared[i]); ok {
			t.Errorf("shared pod %d still mounted", i)
		}
	}
}

// TestMountRacesLastUnmount starts, round after round, the mount of a new
// pod at the same moment as the unmount of the volume's only other pod, so
// the last user's release (global unmount, loop device freed) races the new
// mount (which reuses or remakes them). Whichever wins the volume's lock,
// no mount may be lost, no loop device left over or doubled, and every file
// written so far must be there.
func TestMountRacesLastUnmount(t *testing.T) {
	const rounds = 60
	e := newEnv(t, nil)
	opts := kubeletOptions("pv-race", false, "", "", map[string]string{"size": "32Mi"})
	img := filepath.Join(e.stateDir, "volumes", "pv-race.img")
	prev := e.podDir("race-0", "v")
	e.mustSucceed("mount", prev, opts)
	writeFileSync(t, filepath.Join(prev, "round-0"), []byte("0"))
	for i := 1; i <= rounds; i++ {
		next := e.podDir(fmt.Sprintf("race-%d", i), "v")
		var wg sync.WaitGroup
		var um, m result
		wg.Add(2)
		go func() { defer wg.Done(); um = e.run("unmount", prev) }()
		go func() { defer wg.Done(); m = e.run("mount", next, opts) }()
		wg.Wait()
		if um.Status != "Success" || m.Status != "Success" {
			t.Fatalf("round %d: unmount %s (%s), mount %s (%s)", i, um.Status, um.Message, m.Status, m.Message)
		}
		if _, ok := mountAt(t, prev); ok {
			t.Fatalf("round %d: the unmounted pod dir is still mounted", i)
		}
		pm, ok := mountAt(t, next)
		if !ok {
			t.Fatalf("round %d: the new pod dir is not mounted", i)
		}
		dev, err := loopdev.ByDevNumber(pm.Major, pm.Minor)
		if err != nil {
			t.Fatalf("round %d: the new pod dir holds %s, not a loop device", i, pm.FSType)
		}
		if b, err := loopdev.BackingFile(dev); err != nil || b != img {
			t.Fatalf("round %d: the new pod dir is on %s backed by %q (%v), want the volume's image", i, dev, b, err)
		}
		if loops := e.loopsOf("pv-race"); len(loops) != 1 {
			t.Fatalf("round %d: loop devices %v, want exactly one", i, loops)
		}
		for j := 0; j < i; j++ {
			if b, err := os.ReadFile(filepath.Join(next, fmt.Sprintf("round-%d", j))); err != nil || string(b) != strconv.Itoa(j) {
				t.Fatalf("round %d: file of round %d: %q %v", i, j, b, err)
			}
		}
		writeFileSync(t, filepath.Join(next, fmt.Sprintf("round-%d", i)), []byte(strconv.Itoa(i)))
		prev = next
	}
	e.mustSucceed("unmount", prev)
	e.assertReleased("pv-race")
}
