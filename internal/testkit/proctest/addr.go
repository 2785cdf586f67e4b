package proctest

import (
	"net"
	"testing"
)

// FreeAddrs returns n distinct 127.0.0.1 addresses whose ports were free a
// moment ago. The listeners are held until all n are chosen so the kernel
// cannot hand out one port twice; another process may still take a port
// before the child binds it, so callers retry on "address already in use".
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	ls := make([]net.Listener, 0, n)
	out := make([]string, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a port: %v", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out
}
