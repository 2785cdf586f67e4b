// Package loopback holds what the benchmarks that start keeld processes on
// 127.0.0.1 (bench/cluster, bench/idle) share: free ports, and fetching a
// page (a pprof profile) into a file.
//
// The ports are found by listening on port 0 and closing the listeners
// before returning, so another process could take one before keeld binds
// it; keeld then exits and the caller's start fails, loudly. Safe for
// concurrent use; it holds no state.
package loopback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

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

// FetchToFile writes the body of GET url to file, and refuses (errStatus,
// naming the URL) any status but 200. It uses http.DefaultClient, which
// has no timeout, because a CPU profile takes as long as it was asked to;
// ctx bounds it.
func FetchToFile(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: GET %s: %d", ErrStatus, url, resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// ErrStatus is FetchToFile's error for an answer other than 200 OK.
var ErrStatus = errors.New("loopback: unexpected HTTP status")
