// Command droverd is drover's node agent: it runs on every node (a
// DaemonSet pod), programs the VXLAN overlay from the cluster's Node
// objects and writes what the CNI plugin needs. The loop lives in
// pkg/agent.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "droverd:", err)
		os.Exit(1)
	}
}
