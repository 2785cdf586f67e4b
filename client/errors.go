package client

import "errors"

// Errors returned by Client and Batcher. A command the state machine refused
// as malformed or over a limit wraps sm.ErrInvalidCommand, the one sentinel
// for that case whichever side found it.
var (
	// ErrUnexpectedResult is returned when a result carries a code the
	// client does not know, e.g. from a newer state machine.
	ErrUnexpectedResult = errors.New("keel: unexpected result from the state machine")
	// ErrBatcherClosed is returned by a Batcher's writes after Close.
	ErrBatcherClosed = errors.New("keel: batcher closed")
)
