package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/proctest"
)

// promptly is how soon a new client must get its answer beside idle or
// silent connections that fill --max-conns.
const promptly = 5 * time.Second

// keepAliveGet sends one keep-alive GET /status on c and reads the answer,
// leaving c open and idle.
func keepAliveGet(c net.Conn, br *bufio.Reader) error {
	_ = c.SetDeadline(time.Now().Add(promptly))
	if _, err := io.WriteString(c, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

// freshStatus waits for a new connection's GET /status to answer 200,
// accepting 503s (the documented answer while every slot is busy) on the
// way, and returns how long it took.
func freshStatus(t *testing.T, n *node) time.Duration {
	t.Helper()
	hc := &http.Client{Timeout: promptly, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	err := proctest.Poll(promptly, func() error {
		resp, err := hc.Get(n.url("/status"))
		if err != nil {
			return proctest.Abort(fmt.Errorf("new client got no answer: %w", err))
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			return fmt.Errorf("503")
		}
		if resp.StatusCode != http.StatusOK {
			return proctest.Abort(fmt.Errorf("status %d", resp.StatusCode))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("new /status beside a full --max-conns: %v (after %v)", err, time.Since(start))
	}
	return time.Since(start)
}

// TestIdleConnsMakeRoom: keep-alive clients that made a request and went
// idle fill --max-conns; further clients take the slots of the longest
// idle, so all are served, and a new /status is answered at once. With
// connections waiting in the accept queue (netutil.LimitListener) the 51st
// waited for the 2-minute idle timeout.
func TestIdleConnsMakeRoom(t *testing.T) {
	const maxConns, clients = 50, 60
	n := startSingle(t, "--max-conns", fmt.Sprint(maxConns))
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < clients; i++ {
		c, err := net.DialTimeout("tcp", n.httpAddr, promptly)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		if err := keepAliveGet(c, bufio.NewReader(c)); err != nil {
			t.Fatalf("keep-alive client %d of %d (--max-conns %d): %v", i+1, clients, maxConns, err)
		}
	}
	t.Logf("new /status answered in %v beside %d idle keep-alive connections", freshStatus(t, n), clients)
	// The first clients' connections were closed to make room: a read
	// ends at once rather than at the deadline.
	_ = conns[0].SetReadDeadline(time.Now().Add(promptly))
	if _, err := conns[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("the longest-idle connection is still open and sent data")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the longest-idle connection was not closed")
	}
}

// TestSilentConnsMakeRoom: connections that never send a byte fill
// --max-conns and more wait behind them; a new client is answered within
// seconds (a 503 while they are younger than firstByteGrace, then served
// in a silent one's slot), not after every silent connection timed out.
func TestSilentConnsMakeRoom(t *testing.T) {
	const maxConns, silent = 50, 200
	n := startSingle(t, "--max-conns", fmt.Sprint(maxConns))
	conns := make([]net.Conn, 0, silent)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < silent; i++ {
		c, err := net.DialTimeout("tcp", n.httpAddr, promptly)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	t.Logf("new /status answered in %v beside %d silent connections", freshStatus(t, n), silent)
}
