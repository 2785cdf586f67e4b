package main

import (
	"io/fs"
	"path/filepath"
)

// diskUsage is what du reports for dir: allocated blocks where the platform
// says (Dragonboat preallocates WAL files, so apparent sizes mislead), the
// apparent size otherwise. Files vanishing during the walk (compactions) are
// skipped; the result is a best-effort gauge.
func diskUsage(dir string) uint64 {
	var total uint64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		total += allocated(info)
		return nil
	})
	return total
}
