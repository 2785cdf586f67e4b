//go:build linux

package main

import "errors"

var (
	// errTimeout is returned when a bounded wait (every shard serving, a
	// child process) runs out of time.
	errTimeout = errors.New("timed out")
	// errChild is returned when a child process fails or prints no result.
	errChild = errors.New("child process")
	// errResult is returned when a shard answers with something other than
	// what was written.
	errResult = errors.New("unexpected result")
)
