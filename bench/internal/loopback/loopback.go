// Package loopback finds free TCP ports on 127.0.0.1 for the benchmarks
// that start keeld processes (bench/cluster, bench/idle).
//
// The ports are found by listening on port 0 and closing the listeners
// before returning, so another process could take one before keeld binds
// it; keeld then exits and the caller's start fails, loudly. Safe for
// concurrent use; it holds no state.
package loopback

import "net"

// FreePorts returns n distinct free loopback addresses ("127.0.0.1:port").
// All n listeners stay open until every port is known, so no two are the
// same.
func FreePorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}()
	out := make([]string, n)
	for i := range out {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out[i] = l.Addr().String()
	}
	return out, nil
}
