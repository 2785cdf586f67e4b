package sm

import "errors"

var (
	// ErrInvalidCommand wraps every reason a command is rejected: it did not
	// decode, broke a limit, or is malformed. Applying such a command yields
	// CodeInvalidCommand on every replica.
	ErrInvalidCommand = errors.New("keel: invalid command")
	// ErrUnknownQuery is returned by Lookup for a query type it does not serve.
	ErrUnknownQuery = errors.New("keel: unknown lookup query")
	// ErrClosed is returned by Lookup after Close, or while no image is open.
	ErrClosed = errors.New("keel: state machine is closed")
	// ErrSnapshotUnsupported is returned by the snapshot methods until a
	// snapshot implementation is configured.
	ErrSnapshotUnsupported = errors.New("keel: snapshots are not supported by this state machine build")
	// ErrWrongReplica is returned by Open when the data directory belongs to
	// another shard or replica.
	ErrWrongReplica = errors.New("keel: data directory belongs to another shard or replica")
)
