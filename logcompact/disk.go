package logcompact

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// AllocatedBytes returns the bytes allocated on disk to the regular files
// under the given directories, as du counts them (st_blocks * 512), not
// their apparent sizes: LogDB preallocates WAL files, so apparent sizes
// understate what the log holds, and sparse or recycled files differ from
// both. Files that vanish during the walk (Pebble deletes obsolete files
// concurrently) are skipped. Hard-linked files are counted once.
func AllocatedBytes(dirs ...string) (int64, error) {
	var total int64
	seen := map[[2]uint64]bool{}
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				key := [2]uint64{uint64(st.Dev), st.Ino}
				if seen[key] {
					return nil
				}
				seen[key] = true
				total += st.Blocks * 512
				return nil
			}
			total += fi.Size()
			return nil
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	return total, nil
}
