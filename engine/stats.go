package engine

import "fmt"

// Stats describes the user data in an image.
type Stats struct {
	// AppliedIndex is read from the same view as the counts.
	AppliedIndex uint64 `json:"applied_index"`
	// Keys is the number of live user keys: exact when Exact is true,
	// otherwise estimated from sstable statistics.
	Keys uint64 `json:"keys"`
	// Bytes is the on-disk size of user data: exact key+value bytes when
	// Exact is true, otherwise Pebble's estimate of the disk it takes.
	Bytes uint64 `json:"bytes"`
	// Exact says whether Keys and Bytes were counted by a full scan.
	Exact bool `json:"exact"`
}

// exactBelow is the estimated size under which Stats counts exactly: a scan
// of 8 MiB costs a few milliseconds, and estimates of small, mostly
// unflushed databases are far off because memtables have no statistics.
const exactBelow = 8 << 20

// Stats returns counts of the user data. With exact it always scans every
// key; otherwise it scans only small images and estimates large ones.
func (e *Engine) Stats(exact bool) (Stats, error) {
	if e.closed.Load() {
		return Stats{}, ErrClosed
	}
	est, err := e.db.EstimateDiskUsage(userLower, userUpper)
	if err != nil {
		return Stats{}, fmt.Errorf("keel/engine: estimate disk usage: %w", err)
	}
	m := e.db.Metrics()
	memBytes := m.MemTable.Size
	if exact || est+memBytes < exactBelow {
		return e.countExact()
	}
	applied, err := e.AppliedIndex()
	if err != nil {
		return Stats{}, err
	}
	tables, err := e.db.SSTables()
	if err != nil {
		return Stats{}, fmt.Errorf("keel/engine: list sstables: %w", err)
	}
	var entries, dels uint64
	for _, level := range tables {
		for _, t := range level {
			entries += t.TableStats.NumEntries
			dels += t.TableStats.NumDeletions
		}
	}
	keys := uint64(0)
	if entries > 2*dels {
		// A deletion both adds an entry and hides one.
		keys = entries - 2*dels
	}
	return Stats{AppliedIndex: applied, Keys: keys, Bytes: est}, nil
}

func (e *Engine) countExact() (Stats, error) {
	v, err := e.NewView()
	if err != nil {
		return Stats{}, err
	}
	defer v.Close()
	applied, err := v.AppliedIndex()
	if err != nil {
		return Stats{}, err
	}
	s := Stats{AppliedIndex: applied, Exact: true}
	err = v.Scan(nil, nil, 0, func(k, val []byte) bool {
		s.Keys++
		s.Bytes += uint64(len(k) + len(val))
		return true
	})
	return s, err
}
