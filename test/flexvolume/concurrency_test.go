package flexvolume_test

import (
	"fmt"
	"sync"
	"testing"
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
