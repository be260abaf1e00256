package main

import "syscall"

// childAttr puts a child in its own process group, so that a Ctrl-C on the
// terminal reaches only the bench, which then stops its children in order,
// and has the kernel kill it if the bench dies without cleaning up.
// Pdeathsig fires when the OS thread that started the child exits; the Go
// runtime retires threads only for goroutines that lock one and never
// unlock it, which the bench does not do.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup kills the process group a child leads (go build and the
// compilers it started).
func killGroup(pid int) error { return syscall.Kill(-pid, syscall.SIGKILL) }
