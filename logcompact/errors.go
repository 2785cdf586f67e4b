package logcompact

import "errors"

var (
	// ErrConfig is returned by New and Policy.Validate when a setting is
	// missing or out of range.
	ErrConfig = errors.New("logcompact: invalid configuration")
	// ErrNothingToCompact is returned by Compactor.SnapshotOption when the
	// trailing window already covers the whole compactable log: a snapshot
	// now would not move the log's first index.
	ErrNothingToCompact = errors.New("logcompact: nothing to compact")
	// ErrStopped is returned when the NodeHost or the shard is gone (closed,
	// unloaded); the caller should stop driving this Compactor.
	ErrStopped = errors.New("logcompact: shard stopped")
	// ErrSnapshotFailed is returned by Step when Dragonboat did not complete
	// the snapshot (timeout, rejected, aborted). Nothing was compacted; the
	// next Step retries.
	ErrSnapshotFailed = errors.New("logcompact: snapshot not completed")
)
