//go:build !linux

package host

import "github.com/lni/vfs"

// syncData is f.Sync where fdatasync(2) is not used (see the Linux file).
func syncData(f vfs.File, _ string) error { return f.Sync() }
