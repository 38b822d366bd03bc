// Command kubeenv-shell starts the same etcd and kube-apiserver that tests get
// from kubeenv.Start, prints how to reach them, and keeps them until Ctrl-C
// (or SIGTERM), then removes everything. It exists for poking at the test
// environment by hand; tests never run it.
//
//	go run ./internal/kubeenv/cmd/kubeenv-shell
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/drover-net/drover/internal/kubeenv"
)

// shellTB is just enough of testing.TB for kubeenv.Start outside a test:
// kubeenv and testns call only the methods defined here. The embedded nil
// interface satisfies testing.TB's unexported method.
type shellTB struct {
	testing.TB
	cleanups []func()
	failed   bool
}

func (t *shellTB) Helper()          {}
func (t *shellTB) Name() string     { return "kubeenv-shell" }
func (t *shellTB) Failed() bool     { return t.failed }
func (t *shellTB) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }
func (t *shellTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
func (t *shellTB) Errorf(format string, args ...any) { t.failed = true; t.Logf(format, args...) }
func (t *shellTB) Fatal(args ...any)                 { t.Fatalf("%s", fmt.Sprint(args...)) }
func (t *shellTB) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	t.runCleanups()
	os.Exit(1)
}

func (t *shellTB) runCleanups() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

func main() {
	t := &shellTB{}
	e := kubeenv.Start(t, kubeenv.Options{})
	fmt.Printf("API server %s in network namespace %s\n", e.URL, e.NetNS)
	fmt.Printf("admin kubeconfig: %s\n", e.Kubeconfig)
	fmt.Printf("files and logs:   %s\n", e.Dir)
	fmt.Printf("try: nsenter --net=%s curl --cacert %s --cert %s/pki/admin.crt --key %s/pki/admin.key %s/api/v1/nodes\n",
		e.NetNS, e.CAFile, e.Dir, e.Dir, e.URL)
	fmt.Println("Ctrl-C stops both servers and removes everything.")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	t.runCleanups()
	if t.failed {
		os.Exit(1)
	}
}
