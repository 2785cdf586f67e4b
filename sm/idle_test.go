package sm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/internal/testkit/testutil"
)

// TestIdleTablets: with IdleClose set, a tablet nothing uses closes; a
// Lookup reopens it read-only and an Update for writing, each continuing
// from the same state; a state machine closed while its tablet is idle
// reopens (Open) without opening Pebble, from the closed record, at the
// right applied index, and goes on from there exactly as one that never
// closed.
func TestIdleTablets(t *testing.T) {
	sh, err := engine.NewShared(engine.SharedOptions{})
	must(t, err)
	defer func() { must(t, sh.Close()) }()
	root := t.TempDir()
	cfg := func(shard uint64) Config {
		return Config{Dir: fmt.Sprintf("%s/shard-%d", root, shard), ShardID: shard, ReplicaID: 1,
			Engine: engine.Options{Shared: sh, Logger: quietLogger()}, IdleClose: 100 * time.Millisecond}
	}
	const shards = 4
	sms := make([]*StateMachine, shards+1)
	ref := make([]*StateMachine, shards+1) // the same entries, tablets always open
	var next [shards + 1]uint64
	step := func(shard uint64, n int) {
		var cmds [][]byte
		for i := 0; i < n; i++ {
			cmds = append(cmds, put(t, fmt.Sprintf("k%d", (next[shard]+uint64(i))%5), fmt.Sprint(next[shard]+uint64(i))))
		}
		es := entries(next[shard]+1, cmds...)
		update(t, sms[shard], es)
		update(t, ref[shard], entries(next[shard]+1, cmds...))
		next[shard] += uint64(n)
	}
	allClosed := func() error {
		for shard := uint64(1); shard <= shards; shard++ {
			if sms[shard].TabletOpen() {
				return fmt.Errorf("shard %d's tablet is still open", shard)
			}
		}
		return nil
	}
	same := func(when string) {
		t.Helper()
		for shard := uint64(1); shard <= shards; shard++ {
			if got, want := hashOf(t, sms[shard]), hashOf(t, ref[shard]); got != want {
				t.Fatalf("%s: shard %d hash %+v, want %+v", when, shard, got, want)
			}
			if got := sms[shard].AppliedIndex(); got != next[shard] {
				t.Fatalf("%s: shard %d applied %d, want %d", when, shard, got, next[shard])
			}
		}
	}
	for shard := uint64(1); shard <= shards; shard++ {
		sms[shard] = New(cfg(shard))
		_, err := sms[shard].Open(make(chan struct{}))
		must(t, err)
		rc := cfg(shard)
		rc.Dir += "-ref"
		rc.IdleClose = 0
		ref[shard] = New(rc)
		_, err = ref[shard].Open(make(chan struct{}))
		must(t, err)
		defer ref[shard].Close()
		step(shard, 10)
	}
	testutil.Eventually(t, 10*time.Second, allClosed)
	same("after idle close") // Lookups reopen read-only
	for shard := uint64(1); shard <= shards; shard++ {
		must(t, sms[shard].Sync()) // read-only or closed: nothing to do
		step(shard, 7)             // reopens for writing
	}
	same("after reopening for writing")
	testutil.Eventually(t, 10*time.Second, allClosed)
	for shard := uint64(1); shard <= shards; shard++ {
		must(t, sms[shard].Sync()) // closed: nothing to do
		must(t, sms[shard].Close())
		if sms[shard].stats.idleCloses.Load() < 2 {
			t.Fatalf("shard %d: %d idle closes, want 2", shard, sms[shard].stats.idleCloses.Load())
		}
		// A restart: Open answers from the closed record.
		sms[shard] = New(cfg(shard))
		applied, err := sms[shard].Open(make(chan struct{}))
		must(t, err)
		defer sms[shard].Close()
		if applied != next[shard] {
			t.Fatalf("shard %d: lazy Open returned %d, want %d", shard, applied, next[shard])
		}
		if sms[shard].TabletOpen() {
			t.Fatalf("shard %d: Open opened a cleanly closed tablet", shard)
		}
		// Dragonboat replays from applied+1; an overlap is skipped.
		out := update(t, sms[shard], entries(applied, put(t, "k0", "again"), put(t, "k1", "new")))
		if out[0].Result.Value != uint64(CodeAlreadyApplied) {
			t.Fatalf("shard %d: entry %d applied twice", shard, applied)
		}
		update(t, ref[shard], entries(applied+1, put(t, "k1", "new")))
		next[shard]++
	}
	same("after a lazy restart")

	// Concurrent readers and writers while the tablet closes and reopens
	// under them: every call succeeds and the state matches.
	var wg sync.WaitGroup
	errs := make(chan error, shards*2)
	for shard := uint64(1); shard <= shards; shard++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if _, err := sms[shard].Lookup(GetQuery{Key: []byte("k1")}); err != nil {
					errs <- err
					return
				}
				time.Sleep(time.Duration(i%4) * 15 * time.Millisecond)
			}
		}()
	}
	for i := 0; i < 15; i++ {
		for shard := uint64(1); shard <= shards; shard++ {
			step(shard, 1)
		}
		time.Sleep(time.Duration(i%3) * 20 * time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	same("after concurrent use")
}

// TestLazyOpenRefusesStaleRecord: a closed record that no longer describes
// the live image (here: the tablet was opened for writing and written
// since, then the process crashed) is not used; Open opens the tablet and
// returns what it holds.
func TestLazyOpenRefusesStaleRecord(t *testing.T) {
	fs := vfs.NewCrashableMem()
	cfg := Config{Dir: "/r", ShardID: 1, ReplicaID: 1, Engine: engine.Options{FS: fs, Logger: quietLogger()}, IdleClose: time.Hour}
	s := New(cfg)
	_, err := s.Open(make(chan struct{}))
	must(t, err)
	update(t, s, entries(1, put(t, "a", "1"), put(t, "b", "2")))
	must(t, s.Close()) // writes the record at 2
	s = New(cfg)
	if applied, err := s.Open(make(chan struct{})); err != nil || applied != 2 {
		t.Fatalf("lazy open: %d, %v", applied, err)
	}
	update(t, s, entries(3, put(t, "c", "3")))
	must(t, s.Sync())
	update(t, s, entries(4, put(t, "d", "4"))) // applied, never flushed
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	must(t, s.Close())
	cfg.Engine.FS = crashed
	s = New(cfg)
	applied, err := s.Open(make(chan struct{}))
	must(t, err)
	defer s.Close()
	if applied != 3 {
		t.Fatalf("after a crash: Open returned %d, want the last flush's 3", applied)
	}
	if !s.TabletOpen() {
		t.Fatal("Open trusted the stale closed record instead of opening the tablet")
	}
	if _, found := lookupGet(t, s, "d"); found {
		t.Fatal("unflushed write survived the crash")
	}
}

// TestIdleCloseFailureHalts: when the flush of an idle tablet's close
// fails, the state machine stops answering (Dragonboat halts the replica)
// rather than go on ahead of its tablet.
func TestIdleCloseFailureHalts(t *testing.T) {
	s := New(Config{Dir: t.TempDir(), ShardID: 1, ReplicaID: 1, Engine: engine.Options{Logger: quietLogger()}, IdleClose: time.Hour})
	_, err := s.Open(make(chan struct{}))
	must(t, err)
	defer s.Close()
	update(t, s, entries(1, put(t, "a", "1")))
	s.mu.Lock()
	s.failed = errors.New("injected")
	s.mu.Unlock()
	if _, err := s.Update(entries(2, put(t, "b", "2"))); err == nil {
		t.Fatal("Update succeeded on a failed tablet")
	}
	if err := s.Sync(); err == nil {
		t.Fatal("Sync succeeded on a failed tablet")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestIdleTimeAdapts: a tablet reopened soon after its idle close doubles
// its idle time; one that stays closed longer halves it back; and the idle
// time is never below 20 times the last reopen's duration.
func TestIdleTimeAdapts(t *testing.T) {
	const base = 40 * time.Millisecond
	s := New(Config{Dir: t.TempDir(), ShardID: 1, ReplicaID: 1, Engine: engine.Options{Logger: quietLogger()}, IdleClose: base})
	_, err := s.Open(make(chan struct{}))
	must(t, err)
	defer s.Close()
	closed := func() error {
		if s.TabletOpen() {
			return errors.New("tablet still open")
		}
		return nil
	}
	idx := uint64(0)
	write := func() {
		idx++
		update(t, s, entries(idx, put(t, "k", fmt.Sprint(idx))))
		if cost := time.Duration(s.reopenCost.Load()); s.idleTime() < min(20*cost, 32*base) {
			t.Fatalf("idle time %v is below 20 x the last reopen's %v", s.idleTime(), cost)
		}
	}
	backoff := func() time.Duration { return time.Duration(s.idleFor.Load()) }
	write()
	testutil.Eventually(t, 10*time.Second, closed)
	write() // at once: closed too early
	if got := backoff(); got != 2*base {
		t.Fatalf("idle time after a quick reopen %v, want %v", got, 2*base)
	}
	testutil.Eventually(t, 10*time.Second, closed)
	write()
	if got := backoff(); got != 4*base {
		t.Fatalf("idle time after a second quick reopen %v, want %v", got, 4*base)
	}
	testutil.Eventually(t, 10*time.Second, closed)
	// The condition is time passing: closed longer than twice the idle time.
	time.Sleep(10 * base)
	write()
	if got := backoff(); got != 2*base {
		t.Fatalf("idle time after a long close %v, want %v", got, 2*base)
	}
}

// TestIdleWaitsForFirstUse: a tablet Open opened is not closed before its
// first use (for up to 32 x IdleClose): a host starting many shards takes
// longer than IdleClose to start them all.
func TestIdleWaitsForFirstUse(t *testing.T) {
	const base = 20 * time.Millisecond
	s := New(Config{Dir: t.TempDir(), ShardID: 1, ReplicaID: 1, Engine: engine.Options{Logger: quietLogger()}, IdleClose: base})
	_, err := s.Open(make(chan struct{}))
	must(t, err)
	defer s.Close()
	// The condition is time passing: ten idle times without a use.
	time.Sleep(10 * base)
	if !s.TabletOpen() {
		t.Fatal("a tablet never used was closed before 32 x IdleClose")
	}
	update(t, s, entries(1, put(t, "k", "v")))
	testutil.Eventually(t, 10*time.Second, func() error {
		if s.TabletOpen() {
			return errors.New("tablet still open")
		}
		return nil
	})
}

// TestIdleKeepsOpenFloor: with KeepOpen set, idle tablets close only while
// more than KeepOpen are open on the shared resources, so exactly KeepOpen
// stay open however long they idle (the idle checks that found the floor
// keep coming and closing none), and the count never drops below it even
// though every tablet's idle timer fires on its own.
func TestIdleKeepsOpenFloor(t *testing.T) {
	sh, err := engine.NewShared(engine.SharedOptions{})
	must(t, err)
	defer func() { must(t, sh.Close()) }()
	root := t.TempDir()
	const shards, keep = 5, 2
	sms := make([]*StateMachine, 0, shards)
	for shard := uint64(1); shard <= shards; shard++ {
		s := New(Config{Dir: fmt.Sprintf("%s/shard-%d", root, shard), ShardID: shard, ReplicaID: 1,
			Engine:    engine.Options{Shared: sh, Logger: quietLogger()},
			IdleClose: 50 * time.Millisecond, KeepOpen: keep})
		_, err := s.Open(make(chan struct{}))
		must(t, err)
		defer s.Close()
		update(t, s, entries(1, put(t, "k", "v")))
		sms = append(sms, s)
	}
	counts := func() (open int, closes, kept uint64) {
		for _, s := range sms {
			if s.TabletOpen() {
				open++
			}
			closes += s.stats.idleCloses.Load()
			kept += s.stats.keptOpen.Load()
		}
		return open, closes, kept
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if open, closes, kept := counts(); closes != shards-keep || kept < 2*keep {
			return fmt.Errorf("%d open, %d idle closes, %d checks kept a tablet open; want %d closes and %d+ kept", open, closes, kept, shards-keep, 2*keep)
		}
		return nil
	})
	if open, closes, _ := counts(); open != keep || closes != shards-keep {
		t.Fatalf("%d tablets open after %d idle closes, want %d open", open, closes, keep)
	}
	if got := sh.Stats().Engines; got != keep {
		t.Fatalf("shared resources count %d open engines, want %d", got, keep)
	}
}
