//go:build linux

package main

import "errors"

var (
	// errTimeout is returned when a bounded wait (leader, catch-up, first
	// GET) runs out of time.
	errTimeout = errors.New("timed out")
	// errHTTP is returned when keeld answers a request with an unexpected
	// status.
	errHTTP = errors.New("unexpected HTTP status")
	// errProcess is returned when a keeld process cannot be started or
	// exits early.
	errProcess = errors.New("keeld process")
	// errNoSnapshot is returned when a follower left behind the compacted
	// log caught up without installing a snapshot of some shard: the
	// catch-up then timed log replay, not a snapshot.
	errNoSnapshot = errors.New("no snapshot installed")
)
