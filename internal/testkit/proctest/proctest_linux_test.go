package proctest

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestParentDeathKillsChild: when a process that used Start's attributes
// dies by SIGKILL (no cleanup runs in it), the kernel kills its child.
func TestParentDeathKillsChild(t *testing.T) {
	p := startChild(t, "spawn")
	var pid int
	if _, err := fmt.Sscanf(p.Output(), "pid %d", &pid); err != nil || pid <= 0 {
		t.Fatalf("no grandchild pid in %q: %v", p.Output(), err)
	}
	// Should the test fail, the grandchild must not outlive it.
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if !alive(pid) {
		t.Fatalf("grandchild %d not running before its parent died", pid)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	err := Poll(10*time.Second, func() error {
		if alive(pid) {
			return errors.New("grandchild still running")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("grandchild %d after its parent was SIGKILLed: %v", pid, err)
	}
}

// alive reports whether pid runs: it exists and is not a zombie waiting for
// its new parent to reap it.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}
