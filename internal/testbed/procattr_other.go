//go:build !linux

package testbed

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

// stopped cannot be observed portably; SIGSTOP is trusted to take effect.
func stopped(int) error { return nil }
