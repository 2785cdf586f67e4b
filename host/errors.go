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
