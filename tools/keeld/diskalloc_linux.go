package main

import (
	"os"
	"syscall"
)

// allocateFile reserves size bytes for f without writing them.
func allocateFile(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}
