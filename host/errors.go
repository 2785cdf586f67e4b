package host

import "errors"

var (
	// ErrConfig is returned for an unusable Config.
	ErrConfig = errors.New("keel: invalid config")
	// ErrBadSnapshot is returned by Import when the export directory fails
	// verification (incomplete, damaged, or its files disagree); nothing
	// was written.
	ErrBadSnapshot = errors.New("keel: exported snapshot fails verification")
)

var (
	// ErrReplicaRunning is returned when an operation needs a replica to
	// be stopped (its state machine closed) and it is not.
	ErrReplicaRunning = errors.New("keel: replica is still running")
	// ErrHostClosed is returned by a Host's methods after Close.
	ErrHostClosed = errors.New("keel: host is closed")
)
