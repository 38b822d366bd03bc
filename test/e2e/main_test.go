//go:build e2e

// Package e2e_test proves drover on real nodes: a real kube-apiserver, and
// per node a network namespace running containerd (its CRI plugin calls the
// drover CNI plugin) and kubelet (which calls the drover/local Flexvolume
// driver), with droverd installed and run per node as the DaemonSet would.
// Run it with `make e2e` (scripts/e2e.sh), which installs what it needs.
package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/drover-net/drover/internal/cnirig"
)

// Images the suite builds and imports into every node's containerd; pods
// use imagePullPolicy Never.
const (
	pauseImage = "drover.test/pause:e2e"
	echoImage  = "drover.test/echo:e2e"
)

var (
	binDir     string // droverd, drover, local, as `make build` makes them
	refPlugins string // the reference CNI plugins (portmap, loopback, ...)
	archives   []string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "drover-e2e-build-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = filepath.Join(dir, "bin")
	builds := map[string]string{
		filepath.Join(binDir, "droverd"): "github.com/drover-net/drover/cmd/droverd",
		filepath.Join(binDir, "drover"):  "github.com/drover-net/drover/plugins/drover",
		filepath.Join(binDir, "local"):   "github.com/drover-net/drover/flexvolume/local",
		filepath.Join(dir, "echo"):       "github.com/drover-net/drover/test/e2e/images/echo",
		filepath.Join(dir, "pause"):      "github.com/drover-net/drover/test/e2e/images/pause",
	}
	for dst, pkg := range builds {
		cmd := exec.Command("go", "build", "-trimpath", "-o", dst, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, out)
			return 1
		}
	}
	for _, img := range []struct{ ref, exe, entry string }{
		{pauseImage, filepath.Join(dir, "pause"), "pause"},
		{echoImage, filepath.Join(dir, "echo"), "echo"},
	} {
		a := filepath.Join(dir, filepath.Base(img.exe)+".oci.tar")
		if err := writeOCIArchive(a, img.ref, img.exe, img.entry); err != nil {
			fmt.Fprintf(os.Stderr, "image %s: %v\n", img.ref, err)
			return 1
		}
		archives = append(archives, a)
	}
	refPlugins = cnirig.RefPluginsDir()
	if err := cnirig.CheckRefPlugins(refPlugins); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, bin := range []string{"containerd", "ctr", "runc", "nsenter", "etcd"} {
		if _, err := exec.LookPath(bin); err != nil {
			fmt.Fprintf(os.Stderr, "%s not found: run `bash scripts/e2e.sh`, which installs it\n", bin)
			return 1
		}
	}
	return m.Run()
}
