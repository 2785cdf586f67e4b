package logcompact

import "fmt"

// EntryOverhead is added to each entry's encoded size to estimate the bytes
// it occupies in Dragonboat's LogDB: a 28-byte entry key, Pebble's 8-byte
// internal key trailer and a few bytes of block framing. LogDB stores
// sstables uncompressed, so the estimate tracks disk use closely.
const EntryOverhead = 40

// Default window and trigger. See DefaultPolicy for the reasoning.
const (
	DefaultKeepEntries    = 50_000
	DefaultKeepBytes      = 12 << 20
	DefaultTriggerEntries = 25_000
	DefaultTriggerBytes   = 6 << 20
)

// Policy decides how far back the Raft log is kept.
//
// The trailing window is the newest entries of the log: at most KeepEntries
// entries and at most KeepBytes estimated bytes (whichever is reached first,
// but never fewer than one entry). Everything before the window may be
// compacted once a snapshot covers it. A compaction is due when the log has
// grown TriggerEntries entries or TriggerBytes bytes past the window, so
// each compaction removes a batch rather than a trickle.
//
// Invariants (checked by Validate): KeepEntries >= 1, KeepBytes >= 1,
// TriggerEntries >= 1, TriggerBytes >= 1.
type Policy struct {
	// KeepEntries is the most entries the window holds. A follower that is
	// fewer than this many entries behind catches up from the log.
	KeepEntries uint64
	// KeepBytes caps the window in estimated LogDB bytes (encoded entry
	// size plus EntryOverhead), so large entries cannot make the window
	// unbounded on disk.
	KeepBytes uint64
	// TriggerEntries and TriggerBytes are how far past the window the log
	// may grow before a compaction is due.
	TriggerEntries uint64
	TriggerBytes   uint64
}

// DefaultPolicy returns Keel's defaults.
//
//   - KeepEntries 50,000: a follower restarted or paused for a few seconds
//     at ~10,000 writes/s (what three replicas sustain on a small machine)
//     catches up from the log. Raft entries are written once per replica, so
//     the window costs disk, not network.
//   - KeepBytes 16 MiB: with small writes (~150 B per entry on disk) the
//     entry count binds first (~7.5 MB); with large values the byte cap
//     does, keeping the log's disk use bounded.
//   - Trigger 25,000 entries / 8 MiB: a compaction rewrites the window's
//     sstables (LogDB's manual compaction covers the whole key range), so
//     compacting every half window bounds that write amplification at about
//     2x of the log while keeping the log at most 1.5 windows.
func DefaultPolicy() Policy {
	return Policy{
		KeepEntries:    DefaultKeepEntries,
		KeepBytes:      DefaultKeepBytes,
		TriggerEntries: DefaultTriggerEntries,
		TriggerBytes:   DefaultTriggerBytes,
	}
}

// Validate reports a setting out of range.
func (p Policy) Validate() error {
	switch {
	case p.KeepEntries == 0:
		return fmt.Errorf("%w: KeepEntries is 0", ErrConfig)
	case p.KeepBytes == 0:
		return fmt.Errorf("%w: KeepBytes is 0", ErrConfig)
	case p.TriggerEntries == 0:
		return fmt.Errorf("%w: TriggerEntries is 0", ErrConfig)
	case p.TriggerBytes == 0:
		return fmt.Errorf("%w: TriggerBytes is 0", ErrConfig)
	}
	return nil
}

// MaxLogBytes is the most estimated bytes the log holds between
// compactions under this policy, not counting entries appended while a
// compaction runs or held back by a streaming floor.
func (p Policy) MaxLogBytes() uint64 { return p.KeepBytes + p.TriggerBytes }

// compactionIndex returns the index to compact the log up to (inclusive:
// the first kept entry is the result + 1) so that the window stays, or
// ok=false when nothing before the window is left. floor, when hasFloor, is
// the lowest snapshot index being streamed to a follower: that follower
// needs floor+1 onwards right after it installs the snapshot, so the log
// is never compacted past floor.
func (p Policy) compactionIndex(s *entrySizes, floor uint64, hasFloor bool) (uint64, bool) {
	start := s.windowStart(p.KeepEntries, p.KeepBytes)
	if start <= s.base {
		return 0, false
	}
	idx := start - 1
	if hasFloor && floor < idx {
		idx = floor
	}
	if idx < s.base {
		return 0, false
	}
	return idx, true
}

// due reports whether the log has grown past the window by a trigger.
func (p Policy) due(s *entrySizes) bool {
	n := uint64(len(s.sizes))
	return n > p.KeepEntries+p.TriggerEntries || s.total > p.KeepBytes+p.TriggerBytes
}
