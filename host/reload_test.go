package host

import (
	"testing"
	"time"
)

// The linkname reaches Dragonboat's variable: it holds Dragonboat's
// default until set, and the setting sticks. Keel's rule keeps the default
// at Keel's tick and gives ten ticks past it.
func TestNodeReloadInterval(t *testing.T) {
	if got := nodeReloadInterval(); got != DefaultNodeReload {
		t.Fatalf("Dragonboat's reload period reads %v, want its default %v (the linkname target moved?)", got, DefaultNodeReload)
	}
	t.Cleanup(func() { SetNodeReloadInterval(0) })
	SetNodeReloadInterval(2 * time.Second)
	if got := nodeReloadInterval(); got != 2*time.Second {
		t.Fatalf("after setting 2s it reads %v", got)
	}
	SetNodeReloadInterval(0)
	if got := nodeReloadInterval(); got != DefaultNodeReload {
		t.Fatalf("after setting 0 it reads %v", got)
	}
	for rtt, want := range map[uint64]time.Duration{20: 200 * time.Millisecond, 100: time.Second, 200: 2 * time.Second} {
		if got := NodeReloadForRTT(rtt); got != want {
			t.Fatalf("NodeReloadForRTT(%d) = %v, want %v", rtt, got, want)
		}
	}
}
