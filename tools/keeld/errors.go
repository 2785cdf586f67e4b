package main

import "errors"

var (
	// errUsage is wrapped by every command-line error: a bad flag, a bad
	// flag value or a bad combination. main exits with status 2 for it.
	errUsage = errors.New("usage")
	// errBadRequest is wrapped by every HTTP request the server refuses as
	// malformed (400).
	errBadRequest = errors.New("bad request")
	// errTooLarge is returned when a request body or value is over a limit
	// (413).
	errTooLarge = errors.New("request too large")
	// errNotFound is returned for a missing key or an unknown path (404).
	errNotFound = errors.New("not found")
	// errUnauthorized is returned for a request without the configured
	// bearer token (401); nothing was read or changed.
	errUnauthorized = errors.New("unauthorized")
	// errUnavailable is returned when a request's shard cannot be reached
	// from here right now (503): no host of it known or reachable.
	errUnavailable = errors.New("shard unavailable")
	// errLoop is returned for a request forwarded too many times (508).
	errLoop = errors.New("forwarding loop")
	// errCrossShard is returned for a transaction whose keys live in more
	// than one shard (400).
	errCrossShard = errors.New("keys in more than one shard")
	// errDiskFull is returned for a write refused because the data
	// directory's free space is below --disk-reserve (507); nothing was
	// written. Reads still work.
	errDiskFull = errors.New("insufficient storage")
)
