// Command drover is the drover CNI plugin: the container runtime execs it
// once per ADD, DEL, CHECK, STATUS, GC or VERSION call. The verbs live in
// pkg/cniplugin.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/drover-net/drover/pkg/cniplugin"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cniplugin.Add,
		Del:    cniplugin.Del,
		Check:  cniplugin.Check,
		GC:     cniplugin.GC,
		Status: cniplugin.Status,
	}, cniplugin.SupportedVersions, "CNI plugin drover "+cniplugin.Version)
}
