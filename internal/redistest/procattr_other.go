//go:build !linux

package redistest

import "syscall"

// sysProcAttr returns nil: outside Linux there is no portable way to tie the
// server's life to the test binary's, so a crashed test run may leave a
// redis-server behind.
func sysProcAttr() *syscall.SysProcAttr { return nil }
