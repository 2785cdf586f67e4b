package proctest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// PollInterval is how often Poll re-checks its condition.
const PollInterval = 25 * time.Millisecond

// abortError carries the error that ends a Poll early.
type abortError struct{ err error }

func (a *abortError) Error() string { return a.err.Error() }
func (a *abortError) Unwrap() error { return a.err }

// Abort marks err, returned by a Poll condition, as final: Poll returns err
// at once instead of trying again.
func Abort(err error) error { return &abortError{err} }

// Poll calls cond every PollInterval until it returns nil, and returns nil.
// A condition error wrapped by Abort is returned at once. When timeout
// passes first, the error wraps ErrTimeout and the condition's last error.
func Poll(timeout time.Duration, cond func() error) error {
	return poll(nil, timeout, cond)
}

// Poll is the package Poll, but gives up with ErrExited as soon as p ends:
// a dead child will not become ready.
func (p *Proc) Poll(timeout time.Duration, cond func() error) error {
	return poll(p, timeout, cond)
}

func poll(p *Proc, timeout time.Duration, cond func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	var exited <-chan struct{} // nil (never ready) without a process
	if p != nil {
		exited = p.done
	}
	for {
		// Checked before cond, so "connection refused" from a child that
		// died is reported as its exit.
		if p != nil {
			if dead, err := p.Exited(); dead {
				return fmt.Errorf("%s: %w (%v)", p.name, ErrExited, err)
			}
		}
		err := cond()
		if err == nil {
			return nil
		}
		var a *abortError
		if errors.As(err, &a) {
			return a.err
		}
		select {
		case <-exited:
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("%w after %v: %w", ErrTimeout, timeout, err)
		}
	}
}

// Eventually is Poll that fails the test, naming what it waited for.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Get GETs url and returns the body of a 200 answer; any other status is
// an error wrapping ErrHTTPStatus that quotes the body.
func Get(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %w %s: %.200s", url, ErrHTTPStatus, resp.Status, b)
	}
	return b, nil
}

// GetJSON GETs url and decodes a 200 answer's JSON body into v.
func GetJSON(c *http.Client, url string, v any) error {
	b, err := Get(c, url)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// WaitJSON polls url until it answers 200 with a JSON body that, decoded
// into a T, satisfies cond (nil: any such answer). With p not nil it gives
// up as soon as p exits (see Proc.Poll).
func WaitJSON[T any](p *Proc, c *http.Client, url string, timeout time.Duration, cond func(T) error) error {
	return poll(p, timeout, func() error {
		var v T
		if err := GetJSON(c, url, &v); err != nil {
			return err
		}
		if cond == nil {
			return nil
		}
		return cond(v)
	})
}
