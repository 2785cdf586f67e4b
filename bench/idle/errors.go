package main

import "errors"

// errProcess: a keeld could not start or exited early.
var errProcess = errors.New("idle: keeld process")

// errTimeout: an awaited event did not happen in time.
var errTimeout = errors.New("idle: timed out")

// errProbe: a figure could not be read (/proc, /metrics, ss).
var errProbe = errors.New("idle: probe")
