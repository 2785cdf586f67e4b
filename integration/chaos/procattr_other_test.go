//go:build !linux

package chaos

import "syscall"

// childAttr: no parent-death signal outside Linux; t.Cleanup still kills
// the replicas when the test ends normally.
func childAttr() *syscall.SysProcAttr { return nil }
