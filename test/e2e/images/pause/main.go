// Command pause is the e2e suite's pod sandbox image: it holds the pod's
// namespaces and exits on SIGTERM or SIGINT, like registry.k8s.io/pause.
// It is built statically and imported into each node's containerd, because
// no registry is reachable from the test machine.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
