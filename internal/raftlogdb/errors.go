package raftlogdb

import "errors"

var (
	// ErrNotFound is returned when the directory holds no Dragonboat LogDB,
	// or the LogDB holds no records of the replica asked for.
	ErrNotFound = errors.New("raftlogdb: not found")
	// ErrLive is returned by Open when a running process holds a LogDB.
	ErrLive = errors.New("raftlogdb: held by a running process")
	// ErrUnknownLayout is returned when the flag file, the directories or
	// the keys are not the layout this package documents: another LogDB
	// type or Dragonboat version. Nothing is guessed.
	ErrUnknownLayout = errors.New("raftlogdb: unrecognised LogDB layout")
	// ErrCorrupt is returned when a record does not decode, or the records
	// contradict each other (a gap in the log, a key whose index differs
	// from its entry's).
	ErrCorrupt = errors.New("raftlogdb: corrupt LogDB")
	// ErrCompacted is returned when entries a request needs were removed by
	// log compaction.
	ErrCompacted = errors.New("raftlogdb: entries compacted away")
)
