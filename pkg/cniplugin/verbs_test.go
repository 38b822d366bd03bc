package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/ipam"
)

// These tests call the verbs in-process, each on a thread inside a node
// namespace the test made, where the binary tests cannot reach: a lock
// timeout shortened by the package variable, and a result write that fails
// at the moment the test chooses.

var netSeq atomic.Int32

// testNet is one network config on its own node namespace.
type testNet struct {
	node     ns.NetNS
	conf     []byte
	storeDir string
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	dataDir := t.TempDir()
	name := fmt.Sprintf("inproc-%d", netSeq.Add(1))
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"drover","podCIDR":"10.123.%d.0/24","dataDir":%q,"nodeState":%q}`,
		name, netSeq.Load(), dataDir, filepath.Join(t.TempDir(), "node.json"))
	return &testNet{node: testns.New(t), conf: []byte(conf), storeDir: filepath.Join(dataDir, name)}
}

// call runs a verb on a thread in the node namespace.
func (n *testNet) call(verb func(*skel.CmdArgs) error, id string, pod ns.NetNS, stdin []byte) error {
	args := &skel.CmdArgs{ContainerID: id, IfName: "eth0", StdinData: stdin}
	if pod != nil {
		args.Netns = pod.Path()
	}
	var verr error
	if err := n.node.Do(func(ns.NetNS) error { verr = verb(args); return nil }); err != nil {
		return err
	}
	return verr
}

// holdLock takes the network's store lock, as a concurrent plugin process
// would hold it, until the test ends or release is called.
func (n *testNet) holdLock(t *testing.T) (release func()) {
	t.Helper()
	s, err := ipam.Open(n.storeDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			_ = s.Unlock()
			_ = s.Close()
		}
	}
	t.Cleanup(release)
	return release
}

func setLockTimeout(t *testing.T, d time.Duration) {
	old := lockTimeout
	lockTimeout = d
	t.Cleanup(func() { lockTimeout = old })
}

func cniCode(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) carries no CNI error object", err, err)
	}
	return e
}

func TestBusyStoreIsTryAgainLater(t *testing.T) {
	setLockTimeout(t, 100*time.Millisecond)
	n := newTestNet(t)
	pod := testns.New(t)
	n.holdLock(t)
	gcConf := []byte(strings.Replace(string(n.conf), `"type"`, `"cni.dev/valid-attachments":[],"type"`, 1))
	for _, tc := range []struct {
		name  string
		verb  func(*skel.CmdArgs) error
		stdin []byte
	}{
		{"ADD answers 11 while another process holds the store lock", Add, n.conf},
		{"DEL answers 11 while another process holds the store lock", Del, n.conf},
		{"GC answers 11 while another process holds the store lock", GC, gcConf},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := n.call(tc.verb, "c1", pod, tc.stdin)
			if e := cniCode(t, err); e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, "busy") {
				t.Fatalf("got %+v, want code 11 saying the store is busy", e)
			}
		})
	}
	if l, err := linkInPod(pod); err != nil || l != nil {
		t.Fatalf("a refused ADD touched the pod: %v %v", l, err)
	}
}

func linkInPod(pod ns.NetNS) (netlink.Link, error) {
	var l netlink.Link
	err := pod.Do(func(ns.NetNS) error {
		var err error
		l, err = netlink.LinkByName("eth0")
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			l, err = nil, nil
		}
		return err
	})
	return l, err
}

// TestFailedUndoIsReported makes an ADD fail after its veth exists (the
// result cannot be written) while another process holds the store lock, so
// its undo cannot release the address. The runtime must hear of both.
func TestFailedUndoIsReported(t *testing.T) {
	setLockTimeout(t, 200*time.Millisecond)
	n := newTestNet(t)
	pod := testns.New(t)

	// Stdout is a pipe filled to the brim: ADD blocks writing its result
	// until the test closes the read end, and then the write fails.
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	fill := make([]byte, 4096)
	for {
		if _, err := unix.Write(fds[1], fill); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	r, w := os.NewFile(uintptr(fds[0]), "stdout-r"), os.NewFile(uintptr(fds[1]), "stdout-w")
	defer w.Close()
	stdout := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = stdout }()

	done := make(chan error, 1)
	go func() { done <- n.call(Add, "c1", pod, n.conf) }()

	// The pod's default route is the last thing ADD sets up before it
	// prints, and it allocates long before: once the route is there the
	// store lock is free for the test to take.
	deadline := time.Now().Add(20 * time.Second)
	for !hasDefaultRoute(t, pod) {
		select {
		case err := <-done:
			t.Fatalf("ADD ended before wiring the pod: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("ADD never wired the pod")
		}
		time.Sleep(5 * time.Millisecond)
	}
	release := n.holdLock(t)
	_ = r.Close()
	err := <-done
	release()

	e := cniCode(t, err)
	if e.Code != types.ErrIOFailure || !strings.Contains(e.Msg, "undoing the ADD failed") || !strings.Contains(e.Details, "release its address") {
		t.Errorf("error object %+v does not report the failed undo", e)
	}
	if !errors.Is(err, ipam.ErrLockTimeout) {
		t.Errorf("error %v does not wrap the undo's cause", err)
	}
	// What could be undone was: the veth is gone, with the pod's address.
	if l, lerr := linkInPod(pod); lerr != nil || l != nil {
		t.Errorf("the pod keeps %v (%v) after the undo", l, lerr)
	}
	_ = n.node.Do(func(ns.NetNS) error {
		ls, _ := netlink.LinkList()
		for _, l := range ls {
			if strings.HasPrefix(l.Attrs().Name, "drv") {
				t.Errorf("host veth %s left after the undo", l.Attrs().Name)
			}
		}
		return nil
	})
	// The address the undo could not release is released by DEL.
	if entries, _ := os.ReadDir(n.storeDir); !hasRecord(entries) {
		t.Errorf("store %v: the address the undo could not release is gone", entries)
	}
	if err := n.call(Del, "c1", pod, n.conf); err != nil {
		t.Fatalf("DEL after the failed undo: %v", err)
	}
	if entries, _ := os.ReadDir(n.storeDir); hasRecord(entries) {
		t.Errorf("DEL left %v", entries)
	}
}

func hasRecord(entries []os.DirEntry) bool {
	for _, e := range entries {
		if strings.Count(e.Name(), ".") == 3 && !strings.HasPrefix(e.Name(), ".") {
			return true
		}
	}
	return false
}

func hasDefaultRoute(t *testing.T, pod ns.NetNS) bool {
	t.Helper()
	found := false
	err := pod.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range rs {
			if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
				found = true
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
