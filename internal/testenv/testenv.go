// Package testenv holds what the end-to-end tests share: the rule for tests
// that need root and system tools, and the asr binary they run.
//
// Such a test skips on a developer's machine without root, but fails when
// ASR_E2E is set (as make test and CI set it): a skip must never pass for a
// run.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Require skips or fails t unless it runs as root and every tool is on PATH.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	}
	for _, tool := range tools {
		if why != "" {
			break
		}
		if _, err := exec.LookPath(tool); err != nil {
			why = "needs " + tool + " (run testdata/deps.sh)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("ASR_E2E") != "" {
		t.Fatalf("end-to-end test cannot run: %s (ASR_E2E is set, so this is a failure, not a skip)", why)
	}
	t.Skipf("end-to-end test %s; set ASR_E2E=1 to make this a failure", why)
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
