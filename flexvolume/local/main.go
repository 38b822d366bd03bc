// Command local is the drover/local Flexvolume driver. kubelet runs it as
// <volume-plugin-dir>/drover~local/local <verb> [args...]; see
// docs/flexvolume.md. All the work is in pkg/flexvol and pkg/volumes.
package main

import (
	"os"

	"github.com/drover-net/drover/pkg/flexvol"
)

func main() {
	os.Exit(flexvol.Main(os.Args, os.Stdout, os.Getenv))
}
