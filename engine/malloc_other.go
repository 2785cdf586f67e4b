//go:build !cgo || !linux

package engine

// fixMallocThreshold has nothing to do without cgo (Pebble then allocates
// from the Go heap) or outside Linux's glibc.
func fixMallocThreshold() {}
