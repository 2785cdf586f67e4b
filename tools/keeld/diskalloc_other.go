//go:build !linux

package main

import "os"

// allocateFile writes size zero bytes to f: without fallocate, a sparse
// file would hold no space.
func allocateFile(f *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	for size > 0 {
		n := int64(len(buf))
		if size < n {
			n = size
		}
		if _, err := f.Write(buf[:n]); err != nil {
			return err
		}
		size -= n
	}
	return nil
}
