package dashboard

import "syscall"

// browserProcAttr puts chromium and its helper processes in their own
// process group, so cleanup can kill all of them, and has the kernel kill
// chromium if the test binary dies first.
func browserProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
