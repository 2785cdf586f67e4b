//go:build !linux

package snapshot

import "github.com/cockroachdb/pebble/v2/vfs"

// createReceivedFile creates path for a received file through fs; only
// Linux builds write received files with O_DIRECT (direct_linux.go).
func createReceivedFile(fs vfs.FS, path string) (receivedFile, error) {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, err
	}
	return newBufferedFile(f), nil
}
