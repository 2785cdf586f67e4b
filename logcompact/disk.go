package logcompact

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
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

// diskSamples shares one measurement of the same directories among the
// Compactors of a process: every replica of a NodeHost measures the same
// Raft directory, which holds a snapshot directory per shard.
var diskSamples struct {
	// mu guards m.
	mu sync.Mutex
	m  map[string]diskSample
}

type diskSample struct {
	bytes int64
	at    time.Time
}

// sharedAllocatedBytes is AllocatedBytes(dirs...) measured at most maxAge
// ago by any caller in the process. Concurrent callers past maxAge may
// each measure; the last one's figure is kept.
func sharedAllocatedBytes(maxAge time.Duration, dirs ...string) (int64, error) {
	key := strings.Join(dirs, "\x00")
	now := time.Now()
	diskSamples.mu.Lock()
	s, ok := diskSamples.m[key]
	diskSamples.mu.Unlock()
	if ok && now.Sub(s.at) < maxAge {
		return s.bytes, nil
	}
	n, err := AllocatedBytes(dirs...)
	if err != nil {
		return 0, err
	}
	diskSamples.mu.Lock()
	defer diskSamples.mu.Unlock()
	if diskSamples.m == nil {
		diskSamples.m = make(map[string]diskSample)
	}
	// Forget directories nobody measured for a while (closed hosts,
	// tests' temporary directories).
	for k, v := range diskSamples.m {
		if now.Sub(v.at) > time.Minute {
			delete(diskSamples.m, k)
		}
	}
	diskSamples.m[key] = diskSample{bytes: n, at: now}
	return n, nil
}
