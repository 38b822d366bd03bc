package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drover-net/drover/pkg/cniconf"
	"github.com/drover-net/drover/pkg/install"
)

func init() {
	subcommands["install"] = runInstall
	subcommands["uninstall"] = runUninstall
}

// hostFlags are the flags install and uninstall share: where the host is
// and where its CNI and Flexvolume directories are.
func hostFlags(fs *flag.FlagSet, o *install.Options) {
	fs.StringVar(&o.HostRoot, "host-root", env("HOST_ROOT", "/"), "where the host's / is mounted (the DaemonSet mounts it at /host)")
	fs.StringVar(&o.ProcRoot, "proc-root", env("PROC_ROOT", ""), "the host's procfs, to find the kubelet; default <host-root>/proc")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", env("CNI_BIN_DIR", install.DefaultCNIBin), "host directory of CNI plugin executables")
	fs.StringVar(&o.PluginDir, "plugin-dir", env("PLUGIN_DIR", ""), "host Flexvolume plugin directory; empty: detect from the kubelet and the known distribution paths")
}

func parseOnly(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(envErrs...); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

func runInstall(_ context.Context, args []string) error {
	var o install.Options
	fs := flag.NewFlagSet("droverd install", flag.ContinueOnError)
	hostFlags(fs, &o)
	fs.StringVar(&o.SourceDir, "source-dir", env("SOURCE_DIR", ""), "directory holding the drover and local executables; default droverd's own directory")
	if err := parseOnly(fs, args); err != nil {
		return err
	}
	if o.SourceDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find droverd's directory (set --source-dir): %w", err)
		}
		o.SourceDir = filepath.Dir(exe)
	}
	res, err := install.Install(o)
	if res.PluginDir.Dir != "" {
		fmt.Printf("flexvolume plugin dir %s (%s)\n", res.PluginDir.Dir, res.PluginDir.Source)
	}
	for _, f := range res.Files {
		what := "installed"
		if !f.Changed {
			what = "unchanged"
		}
		fmt.Printf("%s %s\n", what, f.Dst)
	}
	return err
}

func runUninstall(ctx context.Context, args []string) error {
	var o install.UninstallOptions
	var kubeconfig string
	var wait bool
	fs := flag.NewFlagSet("droverd uninstall", flag.ContinueOnError)
	hostFlags(fs, &o.Options)
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", env("CNI_CONF_DIR", "/etc/cni/net.d"), "host directory of the CNI conflist")
	fs.StringVar(&o.CNIConfName, "cni-conf-name", env("CNI_CONF_NAME", cniconf.DefaultName), "the conflist's file name")
	fs.StringVar(&o.RunDir, "run-dir", env("RUN_DIR", "/run/drover"), "drover's host runtime directory, removed whole; by default it holds the node state file and the IPAM store")
	stateFlags(fs, &o.StateFile, &o.IPAMDir)
	fs.StringVar(&o.LogDir, "log-dir", env("LOG_DIR", "/var/log/drover"), "host directory of the Flexvolume driver's log")
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "node whose drover annotations are removed; empty: keep them (env NODE_NAME)")
	fs.StringVar(&kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig path; empty: in-cluster config (env KUBECONFIG)")
	fs.BoolVar(&wait, "wait", false, "after uninstalling, wait for SIGTERM (the uninstall DaemonSet's container)")
	if err := parseOnly(fs, args); err != nil {
		return err
	}
	if o.NodeName != "" {
		if err := validNodeName(o.NodeName); err != nil {
			return err
		}
		c, _, err := kubeClient(kubeconfig)
		if err != nil {
			return err
		}
		o.Kube = c
	} else {
		fmt.Println("kept: node annotations (no --node-name)")
	}
	steps, err := install.Uninstall(ctx, o)
	for _, s := range steps {
		if s.Err == nil {
			fmt.Printf("removed %s\n", s.What)
		}
	}
	if err != nil {
		return err
	}
	fmt.Printf("kept: volume data under %s\n", install.DefaultStateDir)
	if wait {
		<-ctx.Done()
	}
	return nil
}
