package plugin

import "errors"

var (
	// ErrInvalidCommand is returned when the state machine rejected a
	// command as malformed or over a limit (result code CodeInvalidCommand).
	ErrInvalidCommand = errors.New("keel: command rejected as invalid")
	// ErrUnexpectedResult is returned when a result carries a code the
	// client does not know, e.g. from a newer state machine.
	ErrUnexpectedResult = errors.New("keel: unexpected result from the state machine")
	// ErrConfig is returned for an unusable Config.
	ErrConfig = errors.New("keel: invalid config")
)
