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
	// mu guards m (not the samples).
	mu sync.Mutex
	m  map[string]*diskSample
}

type diskSample struct {
	// mu serialises the walks of one set of directories and guards bytes
	// and at: callers that find it held wait for the walk in progress and
	// take its figure instead of walking again.
	mu    sync.Mutex
	bytes int64
	at    time.Time
}

// sharedAllocatedBytes is AllocatedBytes(dirs...) measured at most maxAge
// ago by any caller in the process.
func sharedAllocatedBytes(maxAge time.Duration, dirs ...string) (int64, error) {
	key := strings.Join(dirs, "\x00")
	diskSamples.mu.Lock()
	if diskSamples.m == nil {
		diskSamples.m = make(map[string]*diskSample)
	}
	s := diskSamples.m[key]
	if s == nil {
		// Forget directories nobody added for a while (closed hosts,
		// tests' temporary directories).
		for k, v := range diskSamples.m {
			if v.mu.TryLock() {
				stale := time.Since(v.at) > time.Minute
				v.mu.Unlock()
				if stale {
					delete(diskSamples.m, k)
				}
			}
		}
		s = &diskSample{}
		diskSamples.m[key] = s
	}
	diskSamples.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.at.IsZero() && time.Since(s.at) < maxAge {
		return s.bytes, nil
	}
	n, err := AllocatedBytes(dirs...)
	if err != nil {
		return 0, err
	}
	s.bytes, s.at = n, time.Now()
	return n, nil
}

// lastSharedAllocatedBytes returns the latest measurement of dirs any
// caller in the process took, without walking; ok is false when there is
// none.
func lastSharedAllocatedBytes(dirs ...string) (n int64, at time.Time, ok bool) {
	key := strings.Join(dirs, "\x00")
	diskSamples.mu.Lock()
	s := diskSamples.m[key]
	diskSamples.mu.Unlock()
	if s == nil {
		return 0, time.Time{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, s.at, !s.at.IsZero()
}
