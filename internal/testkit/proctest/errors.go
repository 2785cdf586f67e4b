package proctest

import "errors"

var (
	// ErrTimeout is returned when a deadline passed first: Poll and its
	// variants, Wait on a process still running, Kill on a process that
	// was not reaped in KillTimeout.
	ErrTimeout = errors.New("timed out")
	// ErrExited is returned by Proc.Poll and WaitJSON when the process
	// ended before the condition held, and by Stop when it had already
	// ended.
	ErrExited = errors.New("process exited")
	// ErrKilled is returned by Stop when the process outlived its grace
	// period and was SIGKILLed.
	ErrKilled = errors.New("did not exit in time, sent SIGKILL")
	// ErrHTTPStatus is returned by Get and GetJSON for an answer other
	// than 200 OK.
	ErrHTTPStatus = errors.New("unexpected HTTP status")
)
