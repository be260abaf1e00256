//go:build unix && !linux

package dashboard

import "syscall"

// browserProcAttr puts chromium and its helper processes in their own
// process group, so cleanup can kill all of them.
func browserProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
