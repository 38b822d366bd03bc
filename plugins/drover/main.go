// Command drover is the drover CNI plugin: the container runtime execs it
// once per ADD, DEL, CHECK, STATUS, GC or VERSION call. The verbs live in
// pkg/cniplugin.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/drover-net/drover/pkg/cniplugin"
)

func main() {
	// skel answers VERSION without reading the caller's cniVersion, which
	// the spec says the answer must repeat.
	if os.Getenv("CNI_COMMAND") == "VERSION" {
		if err := cniplugin.PrintVersion(os.Stdin, os.Stdout); err != nil {
			_ = types.NewError(types.ErrIOFailure, "answer VERSION", err.Error()).Print()
			os.Exit(1)
		}
		return
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cniplugin.Add,
		Del:    cniplugin.Del,
		Check:  cniplugin.Check,
		GC:     cniplugin.GC,
		Status: cniplugin.Status,
	}, cniplugin.SupportedVersions, "CNI plugin drover "+cniplugin.Version)
}
