// Command droverd is drover's node agent: it runs on every node (a
// DaemonSet pod), programs the VXLAN overlay from the cluster's Node
// objects and writes what the CNI plugin needs. The loop lives in
// pkg/agent.
//
//	droverd [flags]            run the agent
//	droverd install [flags]    copy the CNI plugin and Flexvolume driver onto the host
//	droverd uninstall [flags]  remove everything drover put on the node, volume data excepted
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// subcommands other than the agent itself; each gets the arguments after
// its name.
var subcommands = map[string]func(ctx context.Context, args []string) error{}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	args := os.Args[1:]
	cmd := run
	if len(args) > 0 {
		if sub, ok := subcommands[args[0]]; ok {
			cmd, args = sub, args[1:]
		}
	}
	if err := cmd(ctx, args); err != nil {
		fmt.Fprintln(os.Stderr, "droverd:", err)
		os.Exit(1)
	}
}
