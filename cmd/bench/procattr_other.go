//go:build !linux

package main

import "syscall"

// childAttr puts a child in its own process group so that a Ctrl-C reaches
// only the bench. Outside Linux nothing ties a child's life to the bench's:
// a bench killed with SIGKILL may leave children behind.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup kills the process group a child leads.
func killGroup(pid int) error { return syscall.Kill(-pid, syscall.SIGKILL) }
