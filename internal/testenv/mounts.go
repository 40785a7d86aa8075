package testenv

import (
	"os"
	"os/exec"
	"syscall"
)

// PrivateMounts re-executes the test binary (as root) in a mount namespace
// of its own; call it first in TestMain of a package whose tests mount
// filesystems. Mounts made in the host's namespace are copied into every
// mount namespace another program creates meanwhile (ip netns exec,
// unshare, a container, another package's tests); such a copy keeps the
// filesystem alive after the test unmounts it, so its image is left
// mid-journal ("needs journal recovery"). In a namespace of their own the
// tests' mounts are seen by nobody else.
func PrivateMounts() {
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
