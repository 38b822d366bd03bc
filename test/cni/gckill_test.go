package cni_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestKilledGC kills GC at the moment it releases a stale attachment's
// address. Whatever a GC that dies half-way leaves behind, it must not be a
// pod still carrying an address the store no longer records: the next ADD
// hands that address out again, and two pods on one bridge share it until
// some later GC, if any, removes the stale veth.
func TestKilledGC(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	for try := 0; try < 3; try++ {
		n := newNode(t, fmt.Sprintf("10.244.%d.0/30", 40+try)) // one usable address
		stale := newPod(t, "stale")
		res, err := c.add(t, n, stale)
		if err != nil {
			t.Fatalf("ADD stale pod: %v", err)
		}
		ip := res.IPs[0].Address.IP.String()

		gcKilledOnRelease(t, n, ip)
		if got := podAddrs(t, stale); len(got) > 0 {
			t.Errorf("attempt %d: GC released %s while the stale pod still carried it (%v); killed right then, it leaves it there", try, ip, got)
		}
		fresh := newPod(t, "fresh")
		if _, err := c.add(t, n, fresh); err != nil {
			t.Fatalf("ADD after the killed GC: %v", err)
		}
		if slices.Contains(podAddrs(t, stale), ip) && slices.Contains(podAddrs(t, fresh), ip) {
			t.Errorf("attempt %d: pods %q and %q both carry %s", try, stale.id, fresh.id, ip)
		}
	}
}

// gcKilledOnRelease runs GC with no valid attachment on the node and
// SIGKILLs it as soon as the record of ip disappears from the store.
func gcKilledOnRelease(t *testing.T, n *node, ip string) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, n.storeDir(), unix.IN_DELETE); err != nil {
		t.Fatalf("watch the store: %v", err)
	}

	conf := map[string]any{}
	if err := json.Unmarshal(n.pluginConf(t), &conf); err != nil {
		t.Fatal(err)
	}
	conf["cni.dev/valid-attachments"] = []any{}
	stdin, _ := json.Marshal(conf)
	cmd := exec.Command(droverBin)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = []string{"CNI_COMMAND=GC", "CNI_PATH=" + cniPath, "PATH=" + os.Getenv("PATH")}
	if err := n.do(t, cmd.Start); err != nil {
		t.Fatalf("start GC: %v", err)
	}
	buf := make([]byte, 4096)
	for done := false; !done; {
		// Bounded: a GC that never releases the record must not hang the
		// test.
		ready, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10_000)
		if err != nil && err != unix.EINTR {
			t.Fatalf("poll inotify: %v", err)
		}
		if ready == 0 {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("GC did not release %s within 10s", ip)
		}
		if err == unix.EINTR {
			continue
		}
		k, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatalf("read inotify: %v", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if name == ip {
				done = true
			}
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}
