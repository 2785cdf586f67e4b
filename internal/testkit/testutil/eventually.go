package testutil

import (
	"testing"
	"time"
)

// PollInterval is how often Eventually retries its condition.
const PollInterval = 10 * time.Millisecond

// Eventually calls cond every PollInterval until it returns nil, and fails
// the test after timeout with cond's last error, so a timed-out wait says
// what it was still waiting for. Call it from the test's goroutine (it
// calls t.Fatalf).
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatal(err)
	}
}

// Poll is Eventually for code that cannot fail a test (setup returning an
// error, a helper goroutine): it returns nil once cond does, or an error
// carrying cond's last error after timeout.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return &TimeoutError{Timeout: timeout, Last: err}
		}
		<-tick.C
	}
}

// TimeoutError is Poll's error: the wait's timeout and the condition's
// last error, which it wraps.
type TimeoutError struct {
	Timeout time.Duration
	Last    error
}

func (e *TimeoutError) Error() string {
	return "timed out after " + e.Timeout.String() + ": " + e.Last.Error()
}

func (e *TimeoutError) Unwrap() error { return e.Last }
