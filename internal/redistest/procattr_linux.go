package redistest

import "syscall"

// sysProcAttr makes the kernel kill redis-server when the test binary dies
// without running its cleanups (a panic, -timeout, SIGKILL), so a failed run
// does not leave servers behind. Pdeathsig fires when the OS thread that
// started the child exits, and the Go runtime retires a thread only when a
// goroutine exits while locked to it (runtime.LockOSThread without Unlock);
// a test that does that could see its Redis killed early.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
