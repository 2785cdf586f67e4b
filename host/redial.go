package host

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"time"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// redialTransport is Dragonboat's TCP transport with message connections
// that outlive an outage of their peer, so that a restarted peer hears from
// this NodeHost within redialInterval instead of after Dragonboat's circuit
// breaker lets a new connection through.
//
// Why: Dragonboat's sender (internal/transport/transport.go send,
// connectAndProcess) keeps one circuit breaker per peer address
// (lni/goutils netutil.NewBreaker): one failed dial or write trips it, and
// while it is tripped every message to that address is dropped until a
// retry, 0.5 s after the trip and then up to 1 s apart, ±50% jitter. A peer
// that comes back after a long outage (a follower restarted to catch up)
// waits 0-1.5 s for the leader's first heartbeat; at a few hundred MB that
// was the largest part of the time before the snapshot stream even started.
// The breaker and its backoff are not configurable and no API resets one.
//
// What changes: the first failure of an outage is still returned to
// Dragonboat, so it trips the breaker and reports the peer unreachable
// once (the leader takes the remote out of optimistic replication, as
// before). The connection Dragonboat asks for after that is always
// granted: if the dial fails, it is a connection in the "down" state that
// drops every batch (as the tripped breaker did, and dropping a Raft message
// is always safe) and redials in the background, at most one dial at a
// time and one per redialInterval (redialSlow after a failure other than a
// refused connection), driven by the batches Dragonboat keeps
// sending (heartbeats, every tick). When the dial succeeds the next batch
// goes out on it. A connection that was up and breaks is a new outage and
// is reported again. Snapshot connections are not wrapped: a failed stream
// must be reported at once (the leader then retries it).
//
// What is lost: while a peer is down, Dragonboat logs its failed dials only
// once per outage instead of every retry, and its connection-failure
// metrics and events count outages, not retries.
type redialTransport struct {
	raftio.ITransport

	// mu guards reported: the peers whose current outage Dragonboat was
	// told about (cleared when a dial to the peer succeeds).
	mu       sync.Mutex
	reported map[string]bool
}

// redialInterval is the least time between two dials to a peer that
// refused the last one (nothing listens: it is down): how late a
// restarted peer can hear from this NodeHost. After any other failure (a
// TLS handshake refused, a timeout) the next dial waits redialSlow, about
// what Dragonboat's breaker waited, so a misconfigured peer is not
// handshaken with twenty times a second.
const (
	redialInterval = 50 * time.Millisecond
	redialSlow     = 500 * time.Millisecond
)

func newRedialTransport(t raftio.ITransport) *redialTransport {
	return &redialTransport{ITransport: t, reported: map[string]bool{}}
}

// GetConnection is raftio.ITransport's, see redialTransport.
func (t *redialTransport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	conn, err := t.ITransport.GetConnection(ctx, target)
	if err == nil {
		t.up(target)
		return &redialConn{t: t, ctx: ctx, target: target, conn: conn}, nil
	}
	if t.firstFailure(target) {
		return nil, err
	}
	return &redialConn{t: t, ctx: ctx, target: target, next: time.Now().Add(redialInterval)}, nil
}

// firstFailure records a failure to reach target and reports whether it
// is the first of this outage (Dragonboat must then see it).
func (t *redialTransport) firstFailure(target string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reported[target] {
		return false
	}
	t.reported[target] = true
	return true
}

// up records that target was reached.
func (t *redialTransport) up(target string) {
	t.mu.Lock()
	delete(t.reported, target)
	t.mu.Unlock()
}

// redialConn is a message connection to one peer that is either up (conn
// set) or down (conn nil, redialing). Dragonboat calls SendMessageBatch
// and Close from one goroutine; a background dial runs concurrently.
type redialConn struct {
	t      *redialTransport
	ctx    context.Context
	target string

	// mu guards the fields below.
	mu sync.Mutex
	// conn is the live connection, nil while the peer is down.
	conn raftio.IConnection
	// dialing is set while a background dial runs; next is the earliest
	// time of the next one.
	dialing bool
	next    time.Time
	closed  bool
}

// SendMessageBatch is raftio.IConnection's, see redialTransport.
func (c *redialConn) SendMessageBatch(b pb.MessageBatch) error {
	c.mu.Lock()
	conn := c.conn
	if conn == nil {
		c.redialLocked()
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	err := conn.SendMessageBatch(b)
	if err == nil {
		return nil
	}
	conn.Close()
	c.mu.Lock()
	c.conn = nil
	c.next = time.Now().Add(redialInterval)
	c.mu.Unlock()
	if c.t.firstFailure(c.target) {
		return err
	}
	return nil
}

// redialLocked starts a background dial unless one runs or it is too soon.
func (c *redialConn) redialLocked() {
	if c.dialing || c.closed || time.Now().Before(c.next) {
		return
	}
	c.dialing = true
	go func() {
		conn, err := c.t.ITransport.GetConnection(c.ctx, c.target)
		wait := redialInterval
		if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			wait = redialSlow
		}
		c.mu.Lock()
		c.dialing = false
		c.next = time.Now().Add(wait)
		closed := c.closed
		if err == nil && !closed {
			c.conn = conn
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
		if closed {
			conn.Close()
			return
		}
		c.t.up(c.target)
	}()
}

// Close is raftio.IConnection's.
func (c *redialConn) Close() {
	c.mu.Lock()
	c.closed = true
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}
