package proctest

import (
	"os/exec"
	"syscall"
)

// setParentDeath makes the kernel SIGKILL the child when the test process
// dies, keeping any other attributes the caller set.
func setParentDeath(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
