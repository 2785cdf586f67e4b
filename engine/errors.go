package engine

import "errors"

var (
	// ErrNotFound is returned by Get when the key has no value.
	ErrNotFound = errors.New("keel/engine: key not found")
	// ErrClosed is returned by any call on an Engine after Close.
	ErrClosed = errors.New("keel/engine: engine is closed")
	// ErrCorrupt is returned when Keel's own metadata inside the database, or
	// the image directory layout, is malformed. The data is bad: retrying
	// will not help.
	ErrCorrupt = errors.New("keel/engine: corrupt data directory")
	// ErrNotKeel is returned when a directory does not hold a Keel image.
	ErrNotKeel = errors.New("keel/engine: not a Keel data directory")
	// ErrInvalidRange is returned for a range whose start is not below its end.
	ErrInvalidRange = errors.New("keel/engine: invalid key range")
)

var (
	// ErrSharedInUse is returned by Shared.Close while engines opened with
	// it are still open.
	ErrSharedInUse = errors.New("keel/engine: shared resources still in use")
	// ErrSharedClosed is returned by Open when Options.Shared is closed.
	ErrSharedClosed = errors.New("keel/engine: shared resources are closed")
)

// errStopped tells the budget goroutine its Shared is closing.
var errStopped = errors.New("keel/engine: stopped")
