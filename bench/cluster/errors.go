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
)
