//go:build !linux

package proctest

import "os/exec"

// setParentDeath: no parent-death signal outside Linux; t.Cleanup still
// kills the child when the test ends normally.
func setParentDeath(*exec.Cmd) {}
