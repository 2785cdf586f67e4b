package main

// The HTTP connection cap (--max-conns). A listener that makes extra
// connections wait in the kernel's accept queue (netutil.LimitListener)
// lets idle keep-alive clients, or clients that connect and never send a
// byte, lock everybody else out until their timeouts. connLimiter instead
// accepts every connection and keeps the count at the cap by choosing whom
// to drop, so a new client always gets an answer at once:
//
//  1. Below the cap the connection is served.
//  2. At the cap, the connection idle longest (keep-alive, between
//     requests; http.StateIdle) is closed to make room. Clients must expect
//     that of any idle connection; Go's and curl's retry on a fresh one.
//  3. Else the oldest connection that has been open firstByteGrace
//     without finishing its first request header (http.StateNew: net/http
//     reports StateActive only once a whole header is read, so this covers
//     both silent clients and ones trickling a header) is closed.
//  4. Else every slot is busy with a request in progress: the new
//     connection gets a JSON 503 with Retry-After and is closed.
//
// The limiter learns each connection's state from http.Server.ConnState,
// which net/http calls from the connection's own goroutine (StateNew from
// the accept loop) before the state takes effect.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// firstByteGrace is how long a new connection may go without a complete
// request header before a newer one at the cap may take its slot. A real
// client sends its request (after any TLS handshake) within a few round
// trips of connecting; the grace keeps a burst of new clients from
// evicting each other before they have spoken.
const firstByteGrace = time.Second

// rejectWait bounds each step of refusing a connection (reading its
// request header, writing the 503, draining), so a refused client that
// never sends or reads holds a goroutine for at most a few of them.
// maxRejecting caps those goroutines (a few KiB each); beyond it a refused
// connection is closed without an answer.
const (
	rejectWait   = 500 * time.Millisecond
	maxRejecting = 1024
)

// connLimiter is a net.Listener that keeps at most max connections open
// (see the file comment). Its ConnState method must be installed as the
// http.Server's ConnState.
type connLimiter struct {
	net.Listener
	max int
	// rejecting holds a token per goroutine answering a refused connection.
	rejecting chan struct{}

	// mu guards conns.
	mu sync.Mutex
	// conns holds every open connection keeld accepted: its last state and
	// when it entered it. A connection leaves when net/http reports it
	// closed or when the limiter closes it.
	conns map[net.Conn]connEntry
}

type connEntry struct {
	state http.ConnState
	since time.Time
}

func newConnLimiter(ln net.Listener, max int) *connLimiter {
	return &connLimiter{Listener: ln, max: max, rejecting: make(chan struct{}, maxRejecting), conns: make(map[net.Conn]connEntry)}
}

// Accept returns the next connection to serve, making room for it or
// refusing it as the file comment describes.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.admit(c) {
			return c, nil
		}
		l.reject(c)
	}
}

// admit records c when there is or can be made room for it.
func (l *connLimiter) admit(c net.Conn) bool {
	now := time.Now()
	l.mu.Lock()
	var victim net.Conn
	if len(l.conns) >= l.max {
		victim = l.victimLocked(now)
		if victim == nil {
			l.mu.Unlock()
			return false
		}
		delete(l.conns, victim)
	}
	l.conns[c] = connEntry{state: http.StateNew, since: now}
	l.mu.Unlock()
	if victim != nil {
		// Closed outside the lock: net/http's StateClosed hook for it
		// takes the lock and finds it already gone.
		_ = victim.Close()
	}
	return true
}

// victimLocked picks the connection to close for a new one: the longest
// idle, else the oldest still without a request header past
// firstByteGrace, else none.
func (l *connLimiter) victimLocked(now time.Time) net.Conn {
	var idle, silent net.Conn
	var idleSince, silentSince time.Time
	for c, e := range l.conns {
		switch e.state {
		case http.StateIdle:
			if idle == nil || e.since.Before(idleSince) {
				idle, idleSince = c, e.since
			}
		case http.StateNew:
			if now.Sub(e.since) >= firstByteGrace && (silent == nil || e.since.Before(silentSince)) {
				silent, silentSince = c, e.since
			}
		}
	}
	if idle != nil {
		return idle
	}
	return silent
}

// ConnState tracks net/http's view of each connection.
func (l *connLimiter) ConnState(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[c]; !ok {
		return // closed by the limiter to make room, or not ours
	}
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, c)
	case http.StateNew:
		// Recorded at Accept; keep that time.
	default:
		l.conns[c] = connEntry{state: st, since: time.Now()}
	}
}

// rejectResponse is the 503 a refused connection receives.
var rejectResponse = func() []byte {
	body := fmt.Sprintf(`{"error":%q}`+"\n", "server busy: every connection slot (--max-conns) is serving a request; retry")
	return []byte(fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
}()

// reject answers c with a 503 and closes it, off the accept loop.
func (l *connLimiter) reject(c net.Conn) {
	select {
	case l.rejecting <- struct{}{}:
		go func() {
			defer func() { <-l.rejecting }()
			answerAndClose(c)
		}()
	default:
		_ = c.Close()
	}
}

// answerAndClose reads c's request header, answers it with the 503 and
// closes c. The header is read first because a client that gets a response
// before it has sent its request may take the connection for broken (Go's
// Transport does); a connection that sends no header in rejectWait is
// closed unanswered. After the 503 it half-closes and drains: closing with
// the client's data unread would reset the connection, which can destroy
// the 503 before the client reads it.
func answerAndClose(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(rejectWait))
	head := make([]byte, 0, 8<<10)
	for !bytes.Contains(head, []byte("\r\n\r\n")) {
		if len(head) == cap(head) {
			break // an oversized header: answer anyway
		}
		n, err := c.Read(head[len(head):cap(head)])
		head = head[:len(head)+n]
		if err != nil {
			return
		}
	}
	_ = c.SetWriteDeadline(time.Now().Add(rejectWait))
	if _, err := c.Write(rejectResponse); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(rejectWait))
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}
