package loopback

import (
	"net"
	"testing"
)

func TestFreePortsDistinctAndBindable(t *testing.T) {
	ports, err := FreePorts(9)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %s returned twice in %v", p, ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", p)
		if err != nil {
			t.Fatalf("%s not bindable after FreePorts: %v", p, err)
		}
		_ = l.Close()
	}
}
