package netlab

import (
	"os/exec"
	"runtime"
	"syscall"
)

// StartBound starts cmd so that it dies with this program (SIGKILL as
// parent-death signal), and calls exited with cmd.Wait's result when it
// ends. The kernel sends that signal when the thread that started the child
// ends, not the process; Go ends threads behind our back (Host.Do leaves its
// thread locked to die), so the child is started and waited for on a thread
// locked for exactly the child's lifetime.
func StartBound(cmd *exec.Cmd, exited func(error)) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited(cmd.Wait())
	}()
	return <-started
}
