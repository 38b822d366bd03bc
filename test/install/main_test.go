// Package install_test tests drover's node installer end to end: the built
// droverd's install and uninstall subcommands against temp directories that
// stand for the host's, and the manifests under deploy/ against a real
// kube-apiserver.
package install_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var (
	droverdBin string
	selfcheck  []byte // the selfcheck program, without a trailer
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "drover-install-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	droverdBin = filepath.Join(tmp, "droverd")
	scBin := filepath.Join(tmp, "selfcheck")
	for pkg, out := range map[string]string{
		"github.com/drover-net/drover/cmd/droverd": droverdBin,
		"./testdata/selfcheck":                     scBin,
	} {
		// Static, as the image builds them.
		build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			return 1
		}
	}
	if selfcheck, err = os.ReadFile(scBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// droverd runs the built droverd and returns its stdout; stderr goes into
// the error.
func droverd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return droverdIn(t, "", args...)
}

// droverdIn runs droverd inside the network namespace at nsPath (none when
// empty).
func droverdIn(t *testing.T, nsPath string, args ...string) (string, error) {
	t.Helper()
	return droverdEnv(t, nsPath, nil, args...)
}

// droverdEnv is droverdIn with env (NAME=value) added to droverd's
// environment, as a DaemonSet's envFrom would.
func droverdEnv(t *testing.T, nsPath string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(droverdBin, args...)
	if nsPath != "" {
		cmd = exec.Command("nsenter", append([]string{"--net=" + nsPath, "--", droverdBin}, args...)...)
	}
	// The host's settings must not leak into the test's droverd.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("droverd %s: %w; stderr: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// executable returns a selfcheck binary that prints version, made
// different in size and content from every other by random padding.
func executable(version string, pad int) []byte {
	payload := make([]byte, len(version)+1+pad)
	copy(payload, version+"\n")
	rand.Read(payload[len(version)+1:]) // never fails since Go 1.24
	body := append(append([]byte{}, selfcheck...), payload...)
	sum := sha256.Sum256(body)
	out := append(body, sum[:]...)
	out = binary.BigEndian.AppendUint64(out, uint64(len(payload)))
	return append(out, "SELFCHK1"...)
}

// writeSource writes a drover and a local executable of the given
// version, as the image's /opt/drover/bin holds them. It returns errors, so
// installer goroutines can use it.
func writeSource(dir, version string, pad int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"drover", "local"} {
		if err := os.WriteFile(filepath.Join(dir, name), executable(name+"-"+version, pad), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func sourceDir(t testing.TB, dir, version string, pad int) {
	t.Helper()
	if err := writeSource(dir, version, pad); err != nil {
		t.Fatal(err)
	}
}

// fakeKubelet makes a procfs under proc holding one kubelet process.
func fakeKubelet(t testing.TB, proc string, args ...string) {
	t.Helper()
	dir := filepath.Join(proc, "4242")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmdline := strings.Join(append([]string{"/usr/bin/kubelet"}, args...), "\x00") + "\x00"
	if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(cmdline), 0o644); err != nil {
		t.Fatal(err)
	}
}
