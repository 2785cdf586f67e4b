package chaos

import "syscall"

// childAttr makes the kernel SIGKILL a replica when the test process dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
