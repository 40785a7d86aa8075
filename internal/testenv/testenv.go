// Package testenv holds what the end-to-end tests share: the one gate for
// tests that need the machine (root, system tools, a VM), and the asr
// binary they run.
//
// The gate: such a test skips, with the reason, on a developer's machine
// that lacks what it needs, but fails when ASR_E2E is set (make unit and CI
// set it): a skip must never pass for a run. Tests that boot VMs run only
// when ASR_VM is set too (make unit sets it): they take minutes each.
//
// The naming rule: a test that needs root (loop devices, mounts, network
// namespaces) or a VM lives in a file whose name ends in e2e_test.go and calls
// Require or RequireVM first. A test that needs only a tool (sgdisk,
// mkfs.ext4 on a file, python3) calls RequireTools and may live anywhere:
// it runs as any user. go test ./... as an ordinary user then runs every
// test that does not need root, and skips the others saying why.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Require skips or fails t unless it runs as root and every tool is found
// (see Tool).
func Require(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
	RequireTools(t, tools...)
}

// RequireTools skips or fails t unless every tool is found (see Tool); it
// does not need root.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, ok := Tool(tool); !ok {
			Unavailable(t, "needs %s (run scripts/deps.sh)", tool)
		}
	}
}

// RequireVM skips t unless ASR_VM is set, then requires root, QEMU, ip and
// tools. VM tests are opt-in even under ASR_E2E, as in vmtest.
func RequireVM(t testing.TB, tools ...string) {
	t.Helper()
	if os.Getenv("ASR_VM") == "" {
		t.Skip("boots a VM: set ASR_VM=1 to run it (make unit does)")
	}
	Require(t, append([]string{"qemu-system-x86_64", "ip"}, tools...)...)
}

// Unavailable is the gate itself: it skips t, saying why, or fails it when
// ASR_E2E is set. Tests use it for needs Require cannot see (a kernel, a
// firmware file).
func Unavailable(t testing.TB, format string, a ...any) {
	t.Helper()
	why := fmt.Sprintf(format, a...)
	if os.Getenv("ASR_E2E") != "" {
		t.Fatalf("end-to-end test cannot run: %s (ASR_E2E is set, so this is a failure, not a skip)", why)
	}
	t.Skipf("end-to-end test %s; set ASR_E2E=1 to make this a failure", why)
}

// Tool finds a program on PATH, which init extends with the system
// directories.
func Tool(name string) (string, bool) {
	p, err := exec.LookPath(name)
	return p, err == nil
}

// init adds /usr/sbin and /sbin to PATH when they are missing: the tools
// the tests run (mkfs.ext4, sgdisk, losetup) live there, and an ordinary
// user's PATH lacks them, though they work on files without root. The
// package is imported by tests only.
func init() {
	path := os.Getenv("PATH")
	dirs := filepath.SplitList(path)
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if !slices.Contains(dirs, d) {
			path += string(filepath.ListSeparator) + d
		}
	}
	os.Setenv("PATH", path)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  string
)

// Asr builds the asr command once per test binary and returns its path.
func Asr(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "asr-test-bin-")
		if err != nil {
			buildErr = err.Error()
			return
		}
		binPath = filepath.Join(dir, "asr")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/asr")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err.Error() + ": " + strings.TrimSpace(string(out))
		}
	})
	if buildErr != "" {
		t.Fatalf("building asr: %s", buildErr)
	}
	return binPath
}

// Cleanup removes the binary Asr built; call it from TestMain.
func Cleanup() {
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
}
