// Command drover-volumes lists and deletes drover/local volumes on a node;
// see docs/flexvolume.md. The work is in pkg/voladmin and pkg/volumes.
package main

import (
	"os"

	"github.com/drover-net/drover/pkg/voladmin"
)

func main() {
	os.Exit(voladmin.Main(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
