// Package cni_test holds drover's CNI contract tests: the built plugin run by
// the real clients (libcni in-process, the cnitool binary), chained with the
// reference portmap and bandwidth plugins, inside namespaces the tests make.
// A test-made "node" namespace stands for the node; further namespaces stand
// for pods. Nothing here touches the machine's own network namespace.
//
// The reference plugins come from scripts/setup.sh; without them the tests
// fail, naming that command.
package cni_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/drover-net/drover/internal/cnirig"
)

var (
	// cniPath is the CNI_PATH directory: drover plus the reference plugins.
	cniPath string
	// droverBin is the plugin built for this run.
	droverBin string
	// refDir holds the reference plugins and cnitool.
	refDir string
	// refErr says why the reference plugins are unusable, if they are.
	refErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "drover-cni-contract-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	droverBin = filepath.Join(tmp, "build", "drover")
	if err := cnirig.BuildDrover(droverBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	refDir = cnirig.RefPluginsDir()
	// A missing reference set fails each test that needs it, by name,
	// rather than the whole binary before any test has reported.
	refErr = cnirig.CheckRefPlugins(refDir)
	cniPath = filepath.Join(tmp, "bin")
	if err := cnirig.ComposePath(cniPath, droverBin, refDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	before := rootLinks()
	code := m.Run()
	// Every plugin ran inside a node namespace a test made: a bridge, veth
	// or ifb of ours in the machine's own namespace is a harness bug.
	if after := rootLinks(); len(after) > len(before) {
		fmt.Fprintf(os.Stderr, "FAIL: tests left links in the root network namespace: %v (before: %v)\n", after, before)
		code = 1
	}
	return code
}

// rootLinks lists the links in the test process's own namespace that drover
// or the chained plugins would create.
func rootLinks() []string {
	links, _ := netlink.LinkList()
	var names []string
	for _, l := range links {
		name := l.Attrs().Name
		if name == "drover0" || strings.HasPrefix(name, "drv") || strings.HasPrefix(name, "bwp") || strings.HasPrefix(name, "cni") {
			names = append(names, name)
		}
	}
	return names
}

// requireRefPlugins fails the test, naming the set-up command, when the
// reference plugins or cnitool are missing.
func requireRefPlugins(t *testing.T) {
	t.Helper()
	if refErr != nil {
		t.Fatal(refErr)
	}
}
