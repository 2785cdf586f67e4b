package logcompact

import (
	"errors"
	"testing"

	"github.com/lni/dragonboat/v4/raftpb"
)

func sizesOf(base uint64, n int, cmd int) *entrySizes {
	s := &entrySizes{}
	s.reset(base)
	for i := 0; i < n; i++ {
		e := raftpb.Entry{Index: base + uint64(i), Term: 1, Cmd: make([]byte, cmd)}
		s.add(&e)
	}
	return s
}

func TestWindowByEntries(t *testing.T) {
	s := sizesOf(101, 1000, 10) // log [101, 1100]
	p := Policy{KeepEntries: 300, KeepBytes: 1 << 30, TriggerEntries: 1, TriggerBytes: 1 << 30}
	idx, ok := p.compactionIndex(s, 0, false)
	if !ok || idx != 800 {
		t.Fatalf("compaction index %d %v, want 800 (keep [801, 1100])", idx, ok)
	}
}

func TestWindowByBytes(t *testing.T) {
	s := sizesOf(1001, 1000, 60) // same varint width for every index
	per := uint64(s.sizes[0])
	p := Policy{KeepEntries: 1000, KeepBytes: 100*per + per/2, TriggerEntries: 1, TriggerBytes: 1}
	idx, ok := p.compactionIndex(s, 0, false)
	if !ok || idx != 1900 {
		t.Fatalf("compaction index %d %v, want 1900 (100 entries of %d bytes)", idx, ok, per)
	}
}

func TestWindowKeepsOneHugeEntry(t *testing.T) {
	s := sizesOf(1, 10, 1<<20)
	p := Policy{KeepEntries: 100, KeepBytes: 1, TriggerEntries: 1, TriggerBytes: 1}
	if idx, ok := p.compactionIndex(s, 0, false); !ok || idx != 9 {
		t.Fatalf("compaction index %d %v, want 9 (never fewer than one entry)", idx, ok)
	}
}

func TestWindowFloorAndNothing(t *testing.T) {
	s := sizesOf(1, 1000, 10)
	p := Policy{KeepEntries: 100, KeepBytes: 1 << 30, TriggerEntries: 1, TriggerBytes: 1}
	if idx, ok := p.compactionIndex(s, 250, true); !ok || idx != 250 {
		t.Fatalf("with a stream at 250: %d %v, want 250", idx, ok)
	}
	if idx, ok := p.compactionIndex(s, 0, true); ok {
		t.Fatalf("floor below the log: compacted to %d", idx)
	}
	p.KeepEntries = 1000
	if idx, ok := p.compactionIndex(s, 0, false); ok {
		t.Fatalf("window covers the log: compacted to %d", idx)
	}
}

func TestDueAndTrim(t *testing.T) {
	s := sizesOf(1, 1000, 10)
	p := Policy{KeepEntries: 800, KeepBytes: 1 << 30, TriggerEntries: 200, TriggerBytes: 1 << 30}
	if p.due(s) {
		t.Fatal("due at exactly window+trigger")
	}
	e := raftpb.Entry{Index: 1001, Cmd: make([]byte, 10)}
	s.add(&e)
	if !p.due(s) {
		t.Fatal("not due past window+trigger")
	}
	var want uint64
	for _, v := range s.sizes[501:] {
		want += uint64(v)
	}
	s.trim(502)
	if s.base != 502 || len(s.sizes) != 500 || s.total != want {
		t.Fatalf("trim: base %d len %d total %d", s.base, len(s.sizes), s.total)
	}
	s.trim(5000)
	if s.base != 5000 || len(s.sizes) != 0 || s.total != 0 {
		t.Fatalf("trim past the end: %+v", s)
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Policy{{}, {KeepEntries: 1}, {KeepEntries: 1, KeepBytes: 1}, {KeepEntries: 1, KeepBytes: 1, TriggerEntries: 1}} {
		if err := p.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", p, err)
		}
	}
}
