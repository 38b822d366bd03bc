package agent

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/drover-net/drover/internal/testns"
	"github.com/drover-net/drover/pkg/datastore"
)

// flakyStore is a datastore whose Watch fails a given number of times
// before it delivers a view and blocks like a healthy watch.
type flakyStore struct {
	failures int32
	calls    atomic.Int32
}

func (s *flakyStore) PodCIDR(context.Context, string) (*net.IPNet, error) {
	return nil, errors.New("not used")
}
func (s *flakyStore) Publish(context.Context, datastore.Node) error { return nil }
func (s *flakyStore) Watch(ctx context.Context, onChange func([]datastore.Node)) error {
	n := s.calls.Add(1)
	switch {
	case n <= s.failures:
		return errors.New("watch broke")
	case n == s.failures+1:
		// A watch that ends without an error before ctx is done is as
		// broken as one that fails.
		return nil
	}
	onChange([]datastore.Node{{Name: "peer"}})
	<-ctx.Done()
	return nil
}

func TestAFailedDatastoreWatchIsRestartedWithBackoff(t *testing.T) {
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	ds := &flakyStore{failures: 3}
	a, err := New(Config{NodeName: "n1", Datastore: ds, ClusterCIDR: cluster, VNI: 1, Port: 4789})
	if err != nil {
		t.Fatal(err)
	}
	a.watchBackoff, a.watchBackoffMax = 20*time.Millisecond, 80*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.watchDatastore(ctx); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		a.mu.Lock()
		gen := a.viewGen
		a.mu.Unlock()
		if gen > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no view after %d watch calls", ds.calls.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := ds.calls.Load(); got != 5 {
		t.Errorf("Watch called %d times, want 5 (three errors, one early return, then a working watch)", got)
	}
	if got := counterValue(a.m.WatchRestarts); got != 4 {
		t.Errorf("drover_datastore_watch_restarts_total = %v, want 4", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("watchDatastore did not return after its context ended")
	}
}

func TestListenFailsClearlyWhenTheAddressIsTaken(t *testing.T) {
	n := testns.New(t)
	err := n.Do(func(ns.NetNS) error {
		taken, err := net.Listen("tcp", "127.0.0.1:9436")
		if err != nil {
			return err
		}
		defer taken.Close()
		ln, err := Listen("127.0.0.1:9436")
		if err == nil {
			ln.Close()
			return errors.New("Listen succeeded on an address in use")
		}
		if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "127.0.0.1:9436") {
			return errors.New("error does not say what and why: " + err.Error())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// unreachable is a datastore that cannot answer, like a black-holed API
// server behind request deadlines.
type unreachable struct{}

func (*unreachable) PodCIDR(ctx context.Context, _ string) (*net.IPNet, error) {
	select {
	case <-ctx.Done():
	case <-time.After(50 * time.Millisecond):
	}
	return nil, errors.New("dial tcp: i/o timeout")
}
func (*unreachable) Publish(context.Context, datastore.Node) error { return errors.New("unreachable") }
func (*unreachable) Watch(ctx context.Context, _ func([]datastore.Node)) error {
	<-ctx.Done()
	return nil
}

func TestHealthyWhileWaitingForThePodCIDR(t *testing.T) {
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	a, err := New(Config{NodeName: "n1", Datastore: &unreachable{}, ClusterCIDR: cluster, VNI: 1, Port: 4789,
		StateFile: t.TempDir() + "/node.json", Resync: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if a.Healthy() {
		t.Fatal("healthy before it ran")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := a.waitPodCIDR(ctx)
		done <- err
	}()
	for end := time.Now().Add(5 * time.Second); !a.Healthy(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("never healthy while waiting for the pod CIDR")
		}
	}
	// Stays healthy: every attempt counts as progress.
	for end := time.Now().Add(3*time.Second + 2*time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if !a.Healthy() {
			t.Fatal("unhealthy while waiting for the pod CIDR")
		}
		if a.Ready() {
			t.Fatal("ready without a pod CIDR")
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("waitPodCIDR = %v, want context.Canceled", err)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
