package logcompact

import (
	"errors"
	"fmt"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/raftpb"
)

// readChunk bounds one LogDB read. The LogReader holds its lock, which the
// shard's step worker also takes to append entries, for the whole read:
// small chunks keep that pause short.
const readChunk = 1 << 20

// entrySizes records the estimated LogDB size of each entry of the log, so
// the window can be measured in bytes without reading the log again.
//
// Invariants: sizes[i] is the estimated size of entry base+i; total is the
// sum of sizes. Entries are read once, when they first appear.
type entrySizes struct {
	base  uint64
	sizes []uint32
	total uint64
}

func (s *entrySizes) next() uint64 { return s.base + uint64(len(s.sizes)) }

// reset forgets everything and starts at index first.
func (s *entrySizes) reset(first uint64) {
	s.base, s.sizes, s.total = first, nil, 0
}

// trim drops the entries before first (compacted away).
func (s *entrySizes) trim(first uint64) {
	if first >= s.next() {
		s.reset(first)
		return
	}
	if first <= s.base {
		return
	}
	k := first - s.base
	for _, v := range s.sizes[:k] {
		s.total -= uint64(v)
	}
	s.sizes = s.sizes[k:]
	s.base = first
}

func (s *entrySizes) add(e *raftpb.Entry) {
	n := uint64(e.Size()) + EntryOverhead
	if n > 1<<32-1 {
		n = 1<<32 - 1
	}
	s.sizes = append(s.sizes, uint32(n))
	s.total += n
}

// windowStart returns the first index of the trailing window: the newest
// entries, at most keepEntries of them and at most keepBytes in total, but
// at least one.
func (s *entrySizes) windowStart(keepEntries, keepBytes uint64) uint64 {
	var n, bytes uint64
	i := len(s.sizes) - 1
	for ; i >= 0; i-- {
		v := uint64(s.sizes[i])
		if n > 0 && (n+1 > keepEntries || bytes+v > keepBytes) {
			break
		}
		n++
		bytes += v
	}
	return s.base + uint64(i+1)
}

// refresh brings s up to date with the log held by r: drops compacted
// entries and reads the sizes of new ones.
func (s *entrySizes) refresh(r dragonboat.ReadonlyLogReader) error {
	first, last := r.GetRange()
	if last < first {
		s.reset(first)
		return nil
	}
	s.trim(first)
	for lo := s.next(); lo <= last; {
		ents, err := r.Entries(lo, last+1, readChunk)
		if err != nil {
			// Compacted under us (a snapshot arrived) or not yet readable:
			// start over at the next refresh.
			f, _ := r.GetRange()
			s.reset(f)
			return fmt.Errorf("logcompact: read log entries [%d, %d]: %w", lo, last, err)
		}
		if len(ents) == 0 {
			return nil
		}
		for i := range ents {
			if ents[i].Index != s.next() {
				f, _ := r.GetRange()
				s.reset(f)
				return fmt.Errorf("logcompact: log read returned index %d, want %d: %w",
					ents[i].Index, s.next(), errGap)
			}
			s.add(&ents[i])
		}
		lo = s.next()
	}
	return nil
}

var errGap = errors.New("gap in log read")
