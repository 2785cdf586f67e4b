package host

import (
	"errors"
	"os"
	"syscall"

	"github.com/lni/vfs"
)

// syncData makes f's data durable with fdatasync(2) when f is backed by a
// file descriptor, and falls back to f.Sync otherwise (an in-memory file).
// The descriptor is used inside SyscallConn's Control, which holds it open
// for the call: a concurrent Close cannot hand its number to another file
// mid-sync, and a Sync after Close fails as os.File.Sync would.
func syncData(f vfs.File, path string) error {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return f.Sync()
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return f.Sync()
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			// Like os.File.Sync: an interrupted call is repeated.
			if serr = syscall.Fdatasync(int(fd)); !errors.Is(serr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		// The file is closed; its own Sync says so in os's terms
		// (os.ErrClosed).
		return f.Sync()
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: path, Err: serr}
	}
	return nil
}
