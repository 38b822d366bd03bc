package cni_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// maxPods is kubelet's default pod limit per node: the most parallel ADDs a
// node sees when it comes up full.
const maxPods = 110

// TestParallelAttachments: a node filling up at once. Every ADD must succeed
// with an address of its own, and parallel DELs must release everything.
func TestParallelAttachments(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	n := newNode(t, "10.244.4.0/24")
	pods := make([]*pod, maxPods)
	for i := range pods {
		pods[i] = newPod(t, fmt.Sprintf("parallel-%03d", i))
	}

	results := make([]*current.Result, maxPods)
	start := time.Now()
	errs := parallel(pods, func(i int, p *pod) error {
		var err error
		results[i], err = c.add(t, n, p)
		return err
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%d parallel ADDs: %v", maxPods, err)
	}
	t.Logf("%d parallel ADDs took %v", maxPods, time.Since(start))
	byIP := map[string]string{}
	for i, p := range pods {
		ip := requireAttachment(t, n, p, results[i]).String()
		if other, dup := byIP[ip]; dup {
			t.Errorf("%s and %s both got %s", other, p.id, ip)
		}
		byIP[ip] = p.id
	}
	if got := len(n.allocations(t)); got != maxPods {
		t.Errorf("store holds %d allocations after %d ADDs", got, maxPods)
	}
	if got := len(n.hostVeths(t)); got != maxPods {
		t.Errorf("node has %d host veths after %d ADDs", got, maxPods)
	}
	for _, i := range []int{0, maxPods / 2, maxPods - 1} {
		if err := ping(pods[i].ns, results[(i+1)%maxPods].IPs[0].Address.IP); err != nil {
			t.Errorf("%s cannot reach its neighbour: %v", pods[i].id, err)
		}
	}

	start = time.Now()
	errs = parallel(pods, func(_ int, p *pod) error { return c.del(t, n, p) })
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%d parallel DELs: %v", maxPods, err)
	}
	t.Logf("%d parallel DELs took %v", maxPods, time.Since(start))
	n.requireClean(t, fmt.Sprintf("%d parallel DELs", maxPods))
}

// parallel runs fn for every pod at once and returns the errors, each naming
// its pod.
func parallel(pods []*pod, fn func(int, *pod) error) []error {
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start // release all at once, so the calls really overlap
			if err := fn(i, p); err != nil {
				errs[i] = fmt.Errorf("%s: %w", p.id, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// TestPoolExhaustion: a full pool refuses ADD with drover's code 100 and a
// message naming the cause, leaves nothing for the refused pod, reports
// itself through STATUS, and serves again once a DEL frees an address.
func TestPoolExhaustion(t *testing.T) {
	requireRefPlugins(t)
	t.Parallel()
	c := libcniClient{}
	for _, tc := range []struct {
		cidr   string
		usable int // all but network, gateway and broadcast
	}{
		{"10.244.5.0/28", 13},
		{"10.244.6.0/29", 5},
		{"10.244.7.0/30", 1},
	} {
		t.Run(fmt.Sprintf("a %s pool serves %d pods, refuses the next with code 100, and serves again after a DEL", tc.cidr, tc.usable), func(t *testing.T) {
			n := newNode(t, tc.cidr)
			pods := make([]*pod, tc.usable)
			ips := map[string]bool{}
			for i := range pods {
				pods[i] = newPod(t, fmt.Sprintf("fill-%02d", i))
				res, err := c.add(t, n, pods[i])
				if err != nil {
					t.Fatalf("ADD %d of %d: %v", i+1, tc.usable, err)
				}
				ips[requireAttachment(t, n, pods[i], res).String()] = true
			}
			if len(ips) != tc.usable {
				t.Fatalf("%d pods got %d distinct addresses", tc.usable, len(ips))
			}

			extra := newPod(t, "one-too-many")
			_, err := c.add(t, n, extra)
			requireCNIError(t, err, 100, "ADD past capacity")
			if got := podAddrs(t, extra); len(got) > 0 {
				t.Errorf("the refused pod got %v", got)
			}
			if v := n.hostVeths(t); len(v) != tc.usable {
				t.Errorf("the refused ADD left host veths: %d for %d pods", len(v), tc.usable)
			}
			for _, a := range n.allocations(t) {
				if a.containerID == extra.id {
					t.Errorf("the refused ADD left allocation %s", a.ip)
				}
			}
			requireCNIError(t, c.status(t, n), types.ErrPluginNotAvailable, "STATUS of a full pool")
			// The runtime DELs after a failed ADD: that must succeed.
			if err := c.del(t, n, extra); err != nil {
				t.Errorf("DEL of the refused pod: %v", err)
			}

			freed := podAddrs(t, pods[0])
			if err := c.del(t, n, pods[0]); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if err := c.status(t, n); err != nil {
				t.Errorf("STATUS after a DEL freed an address: %v", err)
			}
			res, err := c.add(t, n, extra)
			if err != nil {
				t.Fatalf("ADD after a DEL freed %v: %v", freed, err)
			}
			if got := requireAttachment(t, n, extra, res).String(); len(freed) != 1 || got != freed[0] {
				t.Errorf("the pod after the DEL got %s, want the one free address %v", got, freed)
			}

			for _, p := range append(pods[1:], extra) {
				if err := c.del(t, n, p); err != nil {
					t.Errorf("DEL %s: %v", p.id, err)
				}
			}
			n.requireClean(t, "DEL of every pod")
		})
	}
}

// requireCNIError fails unless err is a CNI error object with code.
func requireCNIError(t *testing.T, err error, code uint, what string) {
	t.Helper()
	var cniErr *types.Error
	if !errors.As(err, &cniErr) {
		t.Errorf("%s: want CNI error code %d, got %v", what, code, err)
		return
	}
	if cniErr.Code != code {
		t.Errorf("%s: code %d (%s), want %d", what, cniErr.Code, cniErr.Msg, code)
	}
	if strings.TrimSpace(cniErr.Msg) == "" {
		t.Errorf("%s: error %d has no message", what, cniErr.Code)
	}
	t.Logf("%s: %d %s (%s)", what, cniErr.Code, cniErr.Msg, cniErr.Details)
}
