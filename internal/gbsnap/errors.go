package gbsnap

import "errors"

// ErrDamaged is returned when an export directory, a .gbsnap file, a
// snapshot.metadata file or the Keel stream inside fails verification: the
// bytes are bad or the files disagree, and reading them again will not help.
// Filesystem errors are never wrapped in it.
var ErrDamaged = errors.New("keel/gbsnap: damaged snapshot")
