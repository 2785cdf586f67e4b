package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/statemachine"
)

// Batcher tests run on real three-replica clusters. An entryLog wraps the
// state machines to see what each Raft entry carried (a plain write or a
// transaction of n writes) and, for the tests that need a proposal to stay
// in flight, to hold one replica's applies at a gate.

// loggedEntry is what one applied Raft entry carried.
type loggedEntry struct {
	op    sm.Op
	ops   int // writes in a transaction; 1 for a plain command
	bytes int // keys plus values, as the Batcher counts them
}

// entryLog records the entries one replica applies and can hold its
// Update calls until released.
type entryLog struct {
	replica atomic.Uint64 // the replica recorded and gated; 0 for none

	mu      sync.Mutex // guards entries, hold and held
	entries []loggedEntry
	hold    chan struct{} // while not nil, Update waits for it to close
	held    chan struct{} // gets a value each time an Update starts waiting
}

type loggedSM struct {
	statemachine.IOnDiskStateMachine
	log     *entryLog
	replica uint64
}

func (s *loggedSM) Update(ents []statemachine.Entry) ([]statemachine.Entry, error) {
	if s.log.replica.Load() == s.replica {
		s.log.record(ents)
	}
	return s.IOnDiskStateMachine.Update(ents)
}

func (l *entryLog) wrap(replica uint64, s statemachine.IOnDiskStateMachine) statemachine.IOnDiskStateMachine {
	return &loggedSM{IOnDiskStateMachine: s, log: l, replica: replica}
}

func (l *entryLog) record(ents []statemachine.Entry) {
	l.mu.Lock()
	for _, e := range ents {
		c, err := sm.Decode(e.Cmd)
		if err != nil {
			continue // not a Keel command (e.g. empty)
		}
		le := loggedEntry{op: c.Op, ops: 1, bytes: len(c.Key) + len(c.Value)}
		if c.Op == sm.OpTxn {
			le.ops, le.bytes = len(c.Ops), 0
			for _, op := range c.Ops {
				le.bytes += len(op.Key) + len(op.Value)
			}
		}
		l.entries = append(l.entries, le)
	}
	hold, held := l.hold, l.held
	l.mu.Unlock()
	if hold != nil {
		held <- struct{}{}
		<-hold
	}
}

// since returns the entries recorded after the first n.
func (l *entryLog) since(n int) []loggedEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedEntry(nil), l.entries[n:]...)
}

func (l *entryLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// closeGate makes the recorded replica's next Updates wait; held reports
// each one that does.
func (l *entryLog) closeGate() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hold = make(chan struct{})
	l.held = make(chan struct{}, 64)
	return l.held
}

// openGate releases every waiting Update. It is safe to call twice.
func (l *entryLog) openGate() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hold != nil {
		close(l.hold)
		l.hold = nil
	}
}

// batcherCluster starts three replicas recording the leader's entries and
// returns the cluster, the log and the leader.
func batcherCluster(t *testing.T) (*testcluster.Cluster, *entryLog, *testcluster.Node) {
	t.Helper()
	log := &entryLog{}
	c := testcluster.New(t, 3, testcluster.Options{WrapStateMachine: log.wrap})
	// Registered after the cluster's own cleanup, so it runs first: a
	// held Update would keep its NodeHost from closing.
	t.Cleanup(log.openGate)
	leader := c.Leader()
	// Every replica applies every entry; recording the one the Batcher
	// proposes through also lets the gate hold that Batcher's proposals.
	log.replica.Store(leader.ReplicaID)
	return c, log, leader
}

func appliedIndex(c *testcluster.Cluster, n *testcluster.Node) uint64 {
	return n.Factory.StateMachine(c.ShardID, n.ReplicaID).AppliedIndex()
}

// checkReplicas waits until the replicas are at one applied index, then
// checks that they hold identical data with len(want) keys, and that every
// key in universe reads back as want says on every replica.
func checkReplicas(t *testing.T, c *testcluster.Cluster, want map[string]string, universe []string) {
	t.Helper()
	hashes := c.WaitConverged(60 * time.Second)
	var first *uint64
	for id, h := range hashes {
		if h.Keys != uint64(len(want)) {
			t.Errorf("replica %d holds %d keys, want %d", id, h.Keys, len(want))
		}
		if first == nil {
			first = &id
		} else if h != hashes[*first] {
			t.Errorf("replica %d %+v differs from replica %d %+v", id, h, *first, hashes[*first])
		}
	}
	for _, n := range c.Running() {
		for _, k := range universe {
			v, found, err := n.Client.StaleGet([]byte(k))
			if err != nil {
				t.Fatalf("replica %d: get %q: %v", n.ReplicaID, k, err)
			}
			w, ok := want[k]
			if found != ok || string(v) != w {
				t.Fatalf("replica %d: %q = %q (found %v), want %q (found %v)", n.ReplicaID, k, v, found, w, ok)
			}
		}
	}
}

// runWorkload has writers goroutines each do perWriter random puts and
// deletes through b on keys of their own under prefix, and returns the content the
// shard must then hold and every key touched. Each writer's calls are
// sequential, so the final state is known whatever the batching.
func runWorkload(t *testing.T, b *client.Batcher, prefix string, writers, perWriter int, seed int64) (map[string]string, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	models := make([]map[string]string, writers)
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for g := 0; g < writers; g++ {
		models[g] = map[string]string{}
		wg.Add(1)
		go func(g int, m map[string]string) {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(seed + int64(g)))
			for i := 0; i < perWriter; i++ {
				k := fmt.Sprintf("%s%02d/k%02d", prefix, g, rnd.Intn(12))
				var err error
				if rnd.Intn(4) == 0 {
					err = b.Delete(ctx, []byte(k))
					delete(m, k)
				} else {
					v := fmt.Sprintf("%d-%d-%s", g, i, strings.Repeat("v", rnd.Intn(200)))
					err = b.Put(ctx, []byte(k), []byte(v))
					m[k] = v
				}
				if err != nil {
					errc <- fmt.Errorf("writer %d, write %d: %w", g, i, err)
					return
				}
			}
		}(g, models[g])
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	want := map[string]string{}
	var universe []string
	for g, m := range models {
		for k, v := range m {
			want[k] = v
		}
		for i := 0; i < 12; i++ {
			universe = append(universe, fmt.Sprintf("%s%02d/k%02d", prefix, g, i))
		}
	}
	return want, universe
}

// TestBatcherConcurrentWrites: 64 writers through one Batcher on the
// leader. Every call succeeds, the replicas agree with the writers'
// model, and far fewer Raft entries were applied than writes made. With
// MaxOps 1 the same measure sees one entry per write, which shows it can
// tell batching from its absence.
func TestBatcherConcurrentWrites(t *testing.T) {
	const writers, perWriter = 64, 50
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	c, log, leader := batcherCluster(t)

	b := client.NewBatcher(leader.Client, client.BatcherOptions{})
	before, logged := appliedIndex(c, leader), log.len()
	want, universe := runWorkload(t, b, "w", writers, perWriter, seed)
	checkReplicas(t, c, want, universe)
	entries := appliedIndex(c, leader) - before
	t.Logf("%d writes in %d Raft entries", writers*perWriter, entries)
	if entries*2 > writers*perWriter {
		t.Fatalf("%d writes took %d Raft entries: not batched", writers*perWriter, entries)
	}
	var ops, txns int
	for _, e := range log.since(logged) {
		ops += e.ops
		switch {
		case e.op == sm.OpTxn:
			txns++
		case e.op != sm.OpPut && e.op != sm.OpDelete:
			t.Fatalf("unexpected entry %+v", e)
		}
		if e.ops > 256 {
			t.Fatalf("an entry carried %d writes, MaxOps is 256", e.ops)
		}
	}
	if ops != writers*perWriter || txns == 0 {
		t.Fatalf("entries carried %d writes in %d transactions, want %d writes", ops, txns, writers*perWriter)
	}

	t.Run("MaxOps1", func(t *testing.T) {
		const writers, perWriter = 16, 10
		b := client.NewBatcher(leader.Client, client.BatcherOptions{MaxOps: 1})
		before, logged := appliedIndex(c, leader), log.len()
		more, moreKeys := runWorkload(t, b, "x", writers, perWriter, seed)
		for k, v := range more {
			want[k] = v
		}
		checkReplicas(t, c, want, append(universe, moreKeys...))
		if entries := appliedIndex(c, leader) - before; entries < writers*perWriter {
			t.Fatalf("%d writes took %d entries with MaxOps 1", writers*perWriter, entries)
		}
		for _, e := range log.since(logged) {
			if e.op == sm.OpTxn {
				t.Fatalf("MaxOps 1 proposed a transaction of %d writes", e.ops)
			}
		}
	})
}

// TestBatcherRejectsBadWrites: a write the codec refuses fails at once,
// before it is queued (even a context without a deadline does not get
// that far), and good writes made beside it all succeed.
func TestBatcherRejectsBadWrites(t *testing.T) {
	c, _, leader := batcherCluster(t)
	b := client.NewBatcher(leader.Client, client.BatcherOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	bad := []struct {
		name  string
		write func(ctx context.Context) error
	}{
		{"put empty key", func(ctx context.Context) error { return b.Put(ctx, nil, []byte("v")) }},
		{"delete empty key", func(ctx context.Context) error { return b.Delete(ctx, []byte{}) }},
		{"value over MaxValueSize", func(ctx context.Context) error {
			return b.Put(ctx, []byte("big"), make([]byte, sm.MaxValueSize+1))
		}},
		{"key over MaxKeySize", func(ctx context.Context) error {
			return b.Put(ctx, bytes.Repeat([]byte("k"), sm.MaxKeySize+1), []byte("v"))
		}},
	}
	const writers, perWriter = 32, 20
	var wg sync.WaitGroup
	errc := make(chan error, writers+len(bad)*perWriter)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				k := fmt.Sprintf("good/%02d/%02d", g, i)
				if err := b.Put(ctx, []byte(k), []byte(k)); err != nil {
					errc <- fmt.Errorf("good write %s: %w", k, err)
				}
			}
		}(g)
	}
	for _, w := range bad {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				if err := w.write(ctx); !errors.Is(err, sm.ErrInvalidCommand) {
					errc <- fmt.Errorf("%s: %v, want sm.ErrInvalidCommand", w.name, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for _, w := range bad {
		if err := w.write(context.Background()); !errors.Is(err, sm.ErrInvalidCommand) {
			t.Errorf("%s without a deadline: %v, want sm.ErrInvalidCommand before anything else", w.name, err)
		}
	}
	want := map[string]string{}
	var universe []string
	for g := 0; g < writers; g++ {
		for i := 0; i < perWriter; i++ {
			k := fmt.Sprintf("good/%02d/%02d", g, i)
			want[k] = k
			universe = append(universe, k)
		}
	}
	checkReplicas(t, c, want, append(universe, "big"))
}

// TestBatcherRefusals: a context without a deadline, or one already over,
// is refused as Dragonboat refuses it, and Close refuses every later
// write. Nothing refused is written.
func TestBatcherRefusals(t *testing.T) {
	c, _, leader := batcherCluster(t)
	b := client.NewBatcher(leader.Client, client.BatcherOptions{})
	if err := b.Put(context.Background(), []byte("k"), []byte("v")); !errors.Is(err, dragonboat.ErrDeadlineNotSet) {
		t.Fatalf("put without a deadline: %v, want dragonboat.ErrDeadlineNotSet", err)
	}
	if err := b.Delete(context.Background(), []byte("k")); !errors.Is(err, dragonboat.ErrDeadlineNotSet) {
		t.Fatalf("delete without a deadline: %v, want dragonboat.ErrDeadlineNotSet", err)
	}
	// A context already over is refused before anything is queued: past
	// its deadline as Client.Put refuses it, cancelled as ErrCanceled.
	past, cancelPast := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelPast()
	if err := b.Put(past, []byte("dead"), []byte("v")); !errors.Is(err, dragonboat.ErrInvalidDeadline) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put with a past deadline: %v, want dragonboat.ErrInvalidDeadline", err)
	}
	cancelled, cancelNow := context.WithTimeout(context.Background(), time.Minute)
	cancelNow()
	if err := b.Put(cancelled, []byte("dead"), []byte("v")); !errors.Is(err, dragonboat.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("put with a cancelled context: %v, want dragonboat.ErrCanceled", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Put(ctx, []byte("before"), []byte("close")); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b.Close() // idempotent
	if err := b.Put(ctx, []byte("after"), []byte("close")); !errors.Is(err, client.ErrBatcherClosed) {
		t.Fatalf("put after Close: %v, want ErrBatcherClosed", err)
	}
	if err := b.Delete(ctx, []byte("before")); !errors.Is(err, client.ErrBatcherClosed) {
		t.Fatalf("delete after Close: %v, want ErrBatcherClosed", err)
	}
	checkReplicas(t, c, map[string]string{"before": "close"}, []string{"before", "after", "dead"})
}

// TestBatcherCallerTimeout: with two of three replicas stopped nothing
// commits; a caller whose context ends gets an error wrapping
// dragonboat.ErrTimeout, like Client.Put's, while the proposal itself may
// still be pending. A caller whose context is cancelled gets ErrCanceled.
func TestBatcherCallerTimeout(t *testing.T) {
	c, _, leader := batcherCluster(t)
	b := client.NewBatcher(leader.Client, client.BatcherOptions{Timeout: 2 * time.Second})
	for _, n := range c.Running() {
		if n.ReplicaID != leader.ReplicaID {
			c.Stop(n.ReplicaID)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			var err error
			if i%2 == 0 {
				err = b.Put(ctx, []byte(fmt.Sprint("k", i)), []byte("v"))
			} else {
				err = b.Delete(ctx, []byte(fmt.Sprint("k", i)))
			}
			if !errors.Is(err, dragonboat.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("write %d with no quorum: %v, want dragonboat.ErrTimeout", i, err)
			}
		}(i)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stop := time.AfterFunc(200*time.Millisecond, cancel)
		defer stop.Stop()
		if err := b.Put(ctx, []byte("cancelled"), []byte("v")); !errors.Is(err, dragonboat.ErrCanceled) || !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled write with no quorum: %v, want dragonboat.ErrCanceled", err)
		}
	}()
	wg.Wait()
}

// holdSlot closes log's gate and starts a write of "first" through b, and
// returns once the state machine holds it: with MaxInFlight 1 the only
// proposal slot is then taken until the gate opens. The write's result
// arrives on the returned channel.
func holdSlot(t *testing.T, ctx context.Context, b *client.Batcher, log *entryLog) <-chan error {
	t.Helper()
	held := log.closeGate()
	first := make(chan error, 1)
	go func() { first <- b.Put(ctx, []byte("first"), []byte("1")) }()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the first write never reached the state machine")
	}
	return first
}

// TestBatcherQueuedWrites holds the leader's applies at a gate so one
// proposal stays in flight (MaxInFlight 1), and checks what happens to the
// writes queued behind it:
//   - the lone first write is proposed as a plain command;
//   - callers whose contexts end while queued get ErrTimeout, and their
//     writes still leave, together, carrying the values the callers passed
//     even though the callers reused their buffers after giving up;
//   - Close refuses new writes but lets queued ones through.
func TestBatcherQueuedWrites(t *testing.T) {
	c, log, leader := batcherCluster(t)
	b := client.NewBatcher(leader.Client, client.BatcherOptions{MaxInFlight: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	logged := log.len()
	first := holdSlot(t, ctx, b, log)

	// The only proposal slot is taken: these two wait in the queue until
	// their callers give up, which proves they were queued.
	bufs := [][]byte{[]byte("queued-value-a"), []byte("queued-value-b")}
	for i, buf := range bufs {
		short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
		err := b.Put(short, []byte(fmt.Sprint("queued-", i)), buf)
		cancelShort()
		if !errors.Is(err, dragonboat.ErrTimeout) {
			t.Fatalf("queued write %d: %v, want dragonboat.ErrTimeout", i, err)
		}
	}
	// A caller that gave up owns its buffers again.
	for _, buf := range bufs {
		copy(buf, "XXXXXXXXXXXXXX")
	}
	b.Close()
	if err := b.Put(ctx, []byte("late"), []byte("v")); !errors.Is(err, client.ErrBatcherClosed) {
		t.Fatalf("put after Close: %v, want ErrBatcherClosed", err)
	}
	log.openGate()
	if err := <-first; err != nil {
		t.Fatalf("first write: %v", err)
	}
	want := map[string]string{"first": "1", "queued-0": "queued-value-a", "queued-1": "queued-value-b"}
	c.WaitFor(30*time.Second, "the queued writes to be applied", func() bool {
		_, found, err := leader.Client.StaleGet([]byte("queued-1"))
		return err == nil && found
	})
	checkReplicas(t, c, want, []string{"first", "queued-0", "queued-1", "late"})
	got := log.since(logged)
	if len(got) != 2 || got[0].op != sm.OpPut || got[1].op != sm.OpTxn || got[1].ops != 2 {
		t.Fatalf("entries %+v, want a plain put, then a transaction of the 2 queued writes", got)
	}
}

// TestBatcherLimits: with MaxOps 4 and MaxBytes 64 KiB, concurrent writes
// of large values all succeed in batches within both limits, and a value
// larger than MaxBytes leaves alone as a plain command. MaxBytes is capped
// so a batch always fits in one command: writes of nearly MaxValueSize
// with a huge MaxBytes still succeed.
func TestBatcherLimits(t *testing.T) {
	c, log, leader := batcherCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const maxBytes = 64 << 10
	b := client.NewBatcher(leader.Client, client.BatcherOptions{MaxOps: 4, MaxBytes: maxBytes})

	value := func(k string, n int) []byte {
		return append([]byte(k+":"), bytes.Repeat([]byte{'v'}, n)...)
	}
	want := map[string]string{}
	var universe []string
	var mu sync.Mutex // guards want and universe
	var wg sync.WaitGroup
	errc := make(chan error, 256)
	put := func(b *client.Batcher, k string, v []byte) {
		defer wg.Done()
		if err := b.Put(ctx, []byte(k), v); err != nil {
			errc <- fmt.Errorf("put %s (%d bytes): %w", k, len(v), err)
			return
		}
		mu.Lock()
		want[k] = string(v)
		universe = append(universe, k)
		mu.Unlock()
	}
	logged := log.len()
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 6; i++ {
				k := fmt.Sprintf("l/%02d/%d", g, i)
				wg.Add(1)
				put(b, k, value(k, 13<<10+g*150))
			}
		}(g)
	}
	wg.Add(2)
	go put(b, "over-max-bytes", value("over", 3*maxBytes))
	go put(b, "max-value", value("", sm.MaxValueSize-1))
	wg.Wait()

	var alone, batched int
	for _, e := range log.since(logged) {
		if e.ops > 4 {
			t.Errorf("an entry carried %d writes, MaxOps is 4", e.ops)
		}
		if e.ops > 1 && e.bytes > maxBytes {
			t.Errorf("an entry of %d writes carried %d bytes, MaxBytes is %d", e.ops, e.bytes, maxBytes)
		}
		if e.op == sm.OpPut && e.bytes > maxBytes {
			alone++
		}
		if e.ops > 1 {
			batched++
		}
	}
	if alone != 2 || batched == 0 {
		t.Errorf("%d writes over MaxBytes went alone (want 2), %d entries were batches (want some)", alone, batched)
	}

	// Near-maximal values through a Batcher whose MaxBytes asks for more
	// than a command can hold.
	huge := client.NewBatcher(leader.Client, client.BatcherOptions{MaxBytes: 1 << 30})
	for i := 0; i < 6; i++ {
		k := fmt.Sprint("huge/", i)
		wg.Add(1)
		go put(huge, k, value(k, sm.MaxValueSize*7/8))
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	checkReplicas(t, c, want, universe)
}

// TestBatcherSameKey: many goroutines, through Batchers on every replica
// (followers forward to the leader), put one key. The replicas agree, and
// the value is the last one some goroutine wrote: each goroutine's puts
// are sequential, so an earlier one of its values cannot be the last.
func TestBatcherSameKey(t *testing.T) {
	c, _, _ := batcherCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var batchers []*client.Batcher
	for _, n := range c.Running() {
		batchers = append(batchers, client.NewBatcher(n.Client, client.BatcherOptions{}))
	}
	const writers, perWriter = 64, 20
	last := map[string]bool{}
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for g := 0; g < writers; g++ {
		last[fmt.Sprintf("g%02d-%02d", g, perWriter-1)] = true
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			b := batchers[g%len(batchers)]
			for i := 0; i < perWriter; i++ {
				if err := b.Put(ctx, []byte("hot"), []byte(fmt.Sprintf("g%02d-%02d", g, i))); err != nil {
					errc <- fmt.Errorf("writer %d, put %d: %w", g, i, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	c.WaitConverged(60 * time.Second)
	final, found, err := c.Running()[0].Client.StaleGet([]byte("hot"))
	if err != nil || !found {
		t.Fatalf("hot: found %v, %v", found, err)
	}
	if !last[string(final)] {
		t.Fatalf("hot = %q, which is not any writer's last value", final)
	}
	checkReplicas(t, c, map[string]string{"hot": string(final)}, []string{"hot"})
}

// TestBatcherMaxOpsCap: MaxOps above sm.MaxTxnItems is capped, so a queue
// longer than a transaction may hold still leaves in valid proposals. The
// gate holds the only proposal slot while the queue grows; the callers
// give up (proving their writes were queued), and their writes must all
// be applied once the gate opens.
func TestBatcherMaxOpsCap(t *testing.T) {
	c, log, leader := batcherCluster(t)
	b := client.NewBatcher(leader.Client, client.BatcherOptions{MaxOps: 5 * sm.MaxTxnItems, MaxInFlight: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	logged := log.len()
	first := holdSlot(t, ctx, b, log)
	const queued = sm.MaxTxnItems + 100
	want := map[string]string{"first": "1"}
	universe := []string{"first"}
	var wg sync.WaitGroup
	errc := make(chan error, queued)
	for i := 0; i < queued; i++ {
		k := fmt.Sprintf("q%04d", i)
		want[k] = k
		universe = append(universe, k)
		wg.Add(1)
		go func() {
			defer wg.Done()
			short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancelShort()
			if err := b.Put(short, []byte(k), []byte(k)); !errors.Is(err, dragonboat.ErrTimeout) {
				errc <- fmt.Errorf("queued write %s: %v, want dragonboat.ErrTimeout", k, err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	log.openGate()
	if err := <-first; err != nil {
		t.Fatalf("first write: %v", err)
	}
	c.WaitFor(60*time.Second, "every queued write to be applied", func() bool {
		h, err := leader.Client.LocalHash()
		return err == nil && h.Keys == uint64(len(want))
	})
	checkReplicas(t, c, want, universe)
	var ops int
	for _, e := range log.since(logged) {
		if e.ops > sm.MaxTxnItems {
			t.Fatalf("an entry carried %d writes, the cap is %d", e.ops, sm.MaxTxnItems)
		}
		ops += e.ops
	}
	if ops != queued+1 {
		t.Fatalf("entries carried %d writes, want %d", ops, queued+1)
	}
}
