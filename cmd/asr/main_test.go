package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

func TestMain(m *testing.M) {
	privateMounts()
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}

// privateMounts re-executes the tests (as root) in a mount namespace of
// their own. Mounts the tests make are otherwise copied into every mount
// namespace another program creates meanwhile (ip netns, unshare, a
// container); such a copy keeps the filesystem alive after the test
// unmounts it, so its image is left mid-journal and the next mount or mkfs of
// the device fails. Seen on a machine shared with other test runs.
func privateMounts() {
	const marker = "ASR_TEST_PRIVATE_MOUNTS"
	if os.Geteuid() != 0 || os.Getenv(marker) != "" {
		return
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return
	}
	os.Setenv(marker, "1")
	args := append([]string{unshare, "--mount", "--propagation", "private", os.Args[0]}, os.Args[1:]...)
	// On success Exec does not return; on failure the tests run as they are.
	syscall.Exec(unshare, args, os.Environ())
}
