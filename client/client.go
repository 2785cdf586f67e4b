package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/client"
	"github.com/lni/dragonboat/v4/statemachine"
)

// Client reads and writes one Keel shard through a NodeHost that hosts a
// replica of it. Writes are proposed through Raft with a no-op session (at
// most once per call, not deduplicated on retry). Reads are linearizable
// (NodeHost.SyncRead) unless the method's name says Stale, in which case
// they read the local replica without contacting the leader.
//
// Every method needs a context with a deadline: Dragonboat requires one.
//
// A request that Dragonboat drops before it enters the Raft log
// (ErrShardNotReady: no leader known yet, or one is being elected;
// ErrSystemBusy: the proposal queue is full) is retried with a short backoff
// until the context's deadline: such a request was never applied, so
// retrying cannot apply it twice. Any other error of a write, ErrTimeout
// included (the proposal may have been applied), is returned at once.
// Linearizable reads are also retried after a timed-out attempt of
// readAttempt: they change nothing (see retryRead).
type Client struct {
	nh      *dragonboat.NodeHost
	shardID uint64
	session *client.Session
}

// NewClient returns a Client for shardID on nh.
func NewClient(nh *dragonboat.NodeHost, shardID uint64) *Client {
	return &Client{nh: nh, shardID: shardID, session: nh.GetNoOPSession(shardID)}
}

// ShardID is the shard the client talks to.
func (c *Client) ShardID() uint64 { return c.shardID }

// Propose proposes an encoded command and returns its decoded outcome.
// Dragonboat errors (timeouts, shard not ready, ...) are returned as they
// are so callers can match them with errors.Is.
func (c *Client) Propose(ctx context.Context, cmd []byte) (sm.Outcome, error) {
	var res statemachine.Result
	err := retryDropped(ctx, func() error {
		var err error
		res, err = c.nh.SyncPropose(ctx, c.session, cmd)
		return err
	})
	if err != nil {
		return sm.Outcome{}, err
	}
	return sm.DecodeResult(res), nil
}

// minAttemptLeft is the least time before the deadline worth another
// attempt. Dragonboat refuses a request whose deadline is under one tick
// away (RTTMillisecond, 20 ms for Keel) with ErrTimeoutTooSmall, which would
// reach the caller in place of the drop that made it retry; a few ticks
// also give the retry a chance to finish.
const minAttemptLeft = 100 * time.Millisecond

// retryDropped runs op until it succeeds, fails with an error other than a
// drop, or ctx ends (or is about to: see minAttemptLeft); then it returns
// op's last error, or the drop that preceded an ErrTimeoutTooSmall.
func retryDropped(ctx context.Context, op func() error) error {
	backoff := 2 * time.Millisecond
	var dropped error
	for {
		err := op()
		if dropped != nil && errors.Is(err, dragonboat.ErrTimeoutTooSmall) {
			return dropped
		}
		if !errors.Is(err, dragonboat.ErrShardNotReady) && !errors.Is(err, dragonboat.ErrSystemBusy) {
			return err
		}
		dropped = err
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < backoff+minAttemptLeft {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		if backoff < 100*time.Millisecond {
			backoff *= 2
		}
	}
}

func (c *Client) write(ctx context.Context, cmd []byte, err error) error {
	if err != nil {
		return err
	}
	o, err := c.Propose(ctx, cmd)
	if err != nil {
		return err
	}
	return outcomeErr(o)
}

func outcomeErr(o sm.Outcome) error {
	switch o.Code {
	case sm.CodeOK:
		return nil
	case sm.CodeInvalidCommand:
		return fmt.Errorf("%w: %s", sm.ErrInvalidCommand, o.Reason)
	default:
		return fmt.Errorf("%w: %s", ErrUnexpectedResult, o.Code)
	}
}

// Put sets key to value.
func (c *Client) Put(ctx context.Context, key, value []byte) error {
	cmd, err := PutCommand(key, value)
	return c.write(ctx, cmd, err)
}

// Delete removes key. Deleting a missing key succeeds.
func (c *Client) Delete(ctx context.Context, key []byte) error {
	cmd, err := DeleteCommand(key)
	return c.write(ctx, cmd, err)
}

// DeleteRange removes every key in [start, end).
func (c *Client) DeleteRange(ctx context.Context, start, end []byte) error {
	cmd, err := DeleteRangeCommand(start, end)
	return c.write(ctx, cmd, err)
}

// TxnResult is the outcome of a transaction that was applied or refused by a
// precondition.
type TxnResult struct {
	// Succeeded is true when every condition held and the ops were applied.
	Succeeded bool
	// FailedCond is the position of the first failing condition when
	// Succeeded is false.
	FailedCond int
}

// Txn applies ops if every condition holds, atomically.
func (c *Client) Txn(ctx context.Context, conds []Cond, ops []TxnOp) (TxnResult, error) {
	cmd, err := TxnCommand(conds, ops)
	if err != nil {
		return TxnResult{}, err
	}
	o, err := c.Propose(ctx, cmd)
	if err != nil {
		return TxnResult{}, err
	}
	if o.Code == sm.CodePreconditionFailed {
		return TxnResult{FailedCond: o.FailedCond}, nil
	}
	if err := outcomeErr(o); err != nil {
		return TxnResult{}, err
	}
	return TxnResult{Succeeded: true}, nil
}

// read runs a lookup linearizably, or locally when stale.
func (c *Client) read(ctx context.Context, q interface{}, stale bool) (interface{}, error) {
	if stale {
		return c.nh.StaleRead(c.shardID, q)
	}
	var v interface{}
	err := retryRead(ctx, func(actx context.Context) error {
		var err error
		v, err = c.nh.SyncRead(actx, c.shardID, q)
		return err
	})
	return v, err
}

// readAttempt bounds one linearizable read attempt. Dragonboat does not
// resend a ReadIndex request whose message was lost (a follower's request
// forwarded to a leader whose connection is still being set up, e.g.
// right after a restart): that read waits out its whole deadline. A read
// changes nothing, so it is safe to try again on a timeout; shorter
// attempts turn a lost message into a short retry instead of a failed
// request.
const readAttempt = time.Second

// retryRead runs op with attempts of at most readAttempt until it
// succeeds, fails with an error other than a drop or a timeout, or ctx
// ends; then it returns op's last error.
func retryRead(ctx context.Context, op func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, readAttempt)
		err := retryDropped(actx, func() error { return op(actx) })
		cancel()
		if !errors.Is(err, dragonboat.ErrTimeout) || ctx.Err() != nil {
			return err
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < minAttemptLeft {
			return err
		}
	}
}

func typed[T any](v interface{}, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	t, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("%w: lookup returned %T", ErrUnexpectedResult, v)
	}
	return t, nil
}

// Get reads key linearizably. found is false when it has no value.
func (c *Client) Get(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	r, err := typed[sm.GetResult](c.read(ctx, sm.GetQuery{Key: key}, false))
	return r.Value, r.Found, err
}

// StaleGet reads key from the local replica, which may lag the leader.
func (c *Client) StaleGet(key []byte) (value []byte, found bool, err error) {
	r, err := typed[sm.GetResult](c.read(context.Background(), sm.GetQuery{Key: key}, true))
	return r.Value, r.Found, err
}

// Scan reads a page of keys linearizably.
func (c *Client) Scan(ctx context.Context, q ScanQuery) (ScanResult, error) {
	return typed[sm.ScanResult](c.read(ctx, q, false))
}

// StaleScan reads a page of keys from the local replica.
func (c *Client) StaleScan(q ScanQuery) (ScanResult, error) {
	return typed[sm.ScanResult](c.read(context.Background(), q, true))
}

// LocalStats returns the local replica's engine statistics.
func (c *Client) LocalStats(exact bool) (engine.Stats, error) {
	return typed[engine.Stats](c.read(context.Background(), sm.StatsQuery{Exact: exact}, true))
}

// LocalHash returns the local replica's StateHash and the applied index it
// was taken at. Compare replicas at equal applied indexes.
func (c *Client) LocalHash() (engine.StateHash, error) {
	return typed[engine.StateHash](c.read(context.Background(), sm.HashQuery{}, true))
}

// Result is Dragonboat's proposal result, re-exported for hosts that call
// SyncPropose themselves.
type Result = statemachine.Result
