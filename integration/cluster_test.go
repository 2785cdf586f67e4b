package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4/statemachine"
)

// This file holds Keel's core multi-replica tests: concurrent proposals
// checked against a model, replica convergence by StateHash, and a replica
// restart that catches up from the Raft log.

// smRecorder wraps each replica's state machine to record what Open
// returned and whether a snapshot was ever installed.
type smRecorder struct {
	mu       sync.Mutex // guards opens and recovers
	opens    map[uint64][]uint64
	recovers map[uint64]int
}

type recordingSM struct {
	statemachine.IOnDiskStateMachine
	r       *smRecorder
	replica uint64
}

func (s *recordingSM) Open(stopc <-chan struct{}) (uint64, error) {
	idx, err := s.IOnDiskStateMachine.Open(stopc)
	if err == nil {
		s.r.mu.Lock()
		s.r.opens[s.replica] = append(s.r.opens[s.replica], idx)
		s.r.mu.Unlock()
	}
	return idx, err
}

func (s *recordingSM) RecoverFromSnapshot(rd io.Reader, done <-chan struct{}) error {
	s.r.mu.Lock()
	s.r.recovers[s.replica]++
	s.r.mu.Unlock()
	return s.IOnDiskStateMachine.RecoverFromSnapshot(rd, done)
}

func (r *smRecorder) wrap(replica uint64, s statemachine.IOnDiskStateMachine) statemachine.IOnDiskStateMachine {
	return &recordingSM{IOnDiskStateMachine: s, r: r, replica: replica}
}

func (r *smRecorder) openResults(replica uint64) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.opens[replica]...)
}

func (r *smRecorder) recoverCount(replica uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recovers[replica]
}

// kvModel is the expected content of the shard.
type kvModel map[string]string

// coreOp is one operation of the workload with the outcome the model
// predicts for it.
type coreOp struct {
	kind       string // put, delete, delrange, txn
	key, val   string
	end        string
	conds      []client.Cond
	ops        []client.TxnOp
	wantOK     bool // for txn: every condition holds
	failedCond int  // for txn: the first failing condition
}

// apply applies op to m (for a txn, only if its conditions hold in m) and
// returns whether a txn's conditions held and the first failing one.
func (m kvModel) apply(op coreOp) (bool, int) {
	switch op.kind {
	case "put":
		m[op.key] = op.val
	case "delete":
		delete(m, op.key)
	case "delrange":
		for k := range m {
			if k >= op.key && k < op.end {
				delete(m, k)
			}
		}
	case "txn":
		for i, c := range op.conds {
			v, ok := m[string(c.Key)]
			var holds bool
			switch c.Kind {
			case sm.CondAbsent:
				holds = !ok
			case sm.CondExists:
				holds = ok
			default:
				holds = ok && v == string(c.Value)
			}
			if !holds {
				return false, i
			}
		}
		for _, o := range op.ops {
			if o.Op == sm.OpPut {
				m[string(o.Key)] = string(o.Value)
			} else {
				delete(m, string(o.Key))
			}
		}
	}
	return true, 0
}

const coreKeysPerSpace = 12

// keySpace is a set of keys one worker owns, so the final state of each key
// is the result of that worker's acknowledged operations in its own order.
// When an operation's outcome is unknown (a timeout: it may still commit
// later), the worker records it and abandons the space for a fresh one, so
// nothing it does afterwards can be reordered with that operation.
type keySpace struct {
	prefix    string // "w07.2/" for worker 7's third space
	model     kvModel
	uncertain *coreOp
}

func (s *keySpace) key(k int) string { return fmt.Sprintf("%sk%02d", s.prefix, k) }

// possibleStates returns the states the space's keys may be in.
func (s *keySpace) possibleStates() []kvModel {
	out := []kvModel{s.model}
	if s.uncertain != nil {
		with := s.model.clone()
		with.apply(*s.uncertain)
		out = append(out, with)
	}
	return out
}

// nextOp picks worker w's i-th operation in space s given its model.
func nextOp(r *rand.Rand, s *keySpace, w, i int) coreOp {
	m := s.model
	key := func() string { return s.key(r.IntN(coreKeysPerSpace)) }
	val := fmt.Sprintf("w%d-op%d", w, i)
	switch x := r.IntN(100); {
	case x < 50:
		return coreOp{kind: "put", key: key(), val: val}
	case x < 65:
		return coreOp{kind: "delete", key: key()}
	case x < 70:
		a, b := r.IntN(coreKeysPerSpace), r.IntN(coreKeysPerSpace)
		if a > b {
			a, b = b, a
		}
		return coreOp{kind: "delrange", key: s.key(a), end: s.key(b + 1)}
	default:
		// A transaction with conditions that hold in the model, and in half
		// of them one that does not, at a random position.
		op := coreOp{kind: "txn"}
		for j := r.IntN(3); j >= 0; j-- {
			k := key()
			if v, ok := m[k]; ok {
				if r.IntN(2) == 0 {
					op.conds = append(op.conds, client.IfEquals([]byte(k), []byte(v)))
				} else {
					op.conds = append(op.conds, client.IfExists([]byte(k)))
				}
			} else {
				op.conds = append(op.conds, client.IfAbsent([]byte(k)))
			}
		}
		if r.IntN(2) == 0 {
			k := key()
			var bad client.Cond
			if v, ok := m[k]; ok {
				bad = []client.Cond{client.IfAbsent([]byte(k)), client.IfEquals([]byte(k), []byte(v+"-not"))}[r.IntN(2)]
			} else {
				bad = []client.Cond{client.IfExists([]byte(k)), client.IfEquals([]byte(k), nil)}[r.IntN(2)]
			}
			pos := r.IntN(len(op.conds) + 1)
			op.conds = append(op.conds[:pos], append([]client.Cond{bad}, op.conds[pos:]...)...)
		}
		for j := 1 + r.IntN(3); j > 0; j-- {
			if r.IntN(3) == 0 {
				op.ops = append(op.ops, client.DeleteOp([]byte(key())))
			} else {
				op.ops = append(op.ops, client.PutOp([]byte(key()), []byte(val)))
			}
		}
		op.wantOK, op.failedCond = m.clone().apply(op)
		return op
	}
}

func (m kvModel) clone() kvModel { return maps.Clone(m) }

// run proposes op through cl and checks the outcome against the model's
// prediction. It retries only failures that certainly did not apply.
func runOp(ctx context.Context, cl *client.Client, op coreOp) error {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		switch op.kind {
		case "put":
			err = cl.Put(actx, []byte(op.key), []byte(op.val))
		case "delete":
			err = cl.Delete(actx, []byte(op.key))
		case "delrange":
			err = cl.DeleteRange(actx, []byte(op.key), []byte(op.end))
		case "txn":
			var res client.TxnResult
			res, err = cl.Txn(actx, op.conds, op.ops)
			if err == nil && (res.Succeeded != op.wantOK || (!op.wantOK && res.FailedCond != op.failedCond)) {
				err = fmt.Errorf("%w: txn result %+v, model predicts ok=%v failed=%d",
					errWrongResult, res, op.wantOK, op.failedCond)
			}
		}
		cancel()
		if err == nil || !testcluster.NotApplied(err) || attempt >= 100 || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(5+attempt*5) * time.Millisecond):
		}
	}
}

var errWrongResult = errors.New("wrong result")

// workerLog is what one worker saw: its key spaces (every one but the last
// ends in an operation with an unknown outcome) and counts.
type workerLog struct {
	spaces    []*keySpace
	acked     int
	txnOK     int
	txnFailed int
}

// TestClusterConcurrentProposals runs 10,000 concurrent proposals from 32
// goroutines through all three replicas, then checks linearizable reads on
// every replica against a model built from the acknowledged operations,
// StateHash agreement, and that a restarted replica reopens at its
// persisted index and catches up from the log to the same StateHash.
func TestClusterConcurrentProposals(t *testing.T) {
	const workers, total = 32, 10_000
	seed := testutil.Seed(t)
	rec := &smRecorder{opens: map[uint64][]uint64{}, recovers: map[uint64]int{}}
	c := testcluster.New(t, 3, testcluster.Options{WrapStateMachine: rec.wrap})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Each worker owns its keys, so the final state of each key is the
	// result of that worker's acknowledged operations in its own order.
	logs := make([]workerLog, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		n := total / workers
		if w < total%workers {
			n++
		}
		cl := c.Node(uint64(w%3 + 1)).Client
		wg.Add(1)
		go func(w, n int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			l := workerLog{}
			newSpace := func() *keySpace {
				s := &keySpace{prefix: fmt.Sprintf("w%02d.%d/", w, len(l.spaces)), model: kvModel{}}
				l.spaces = append(l.spaces, s)
				return s
			}
			space := newSpace()
			defer func() { logs[w] = l }()
			for i := 0; i < n; i++ {
				op := nextOp(r, space, w, i)
				err := runOp(ctx, cl, op)
				if errors.Is(err, errWrongResult) {
					t.Errorf("worker %d op %d (%+v): %v", w, i, op, err)
					return
				}
				if err != nil {
					if ctx.Err() != nil {
						t.Errorf("worker %d: %v", w, err)
						return
					}
					// Ambiguous: it may yet apply. Leave this space alone
					// from now on so nothing can be reordered with it.
					t.Logf("worker %d op %d %s: outcome unknown: %v", w, i, op.kind, err)
					space.uncertain = &op
					space = newSpace()
					continue
				}
				space.model.apply(op)
				l.acked++
				if op.kind == "txn" {
					if op.wantOK {
						l.txnOK++
					} else {
						l.txnFailed++
					}
				}
			}
		}(w, n)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	acked, uncertain, txnOK, txnFailed := 0, 0, 0, 0
	for _, l := range logs {
		acked += l.acked
		txnOK += l.txnOK
		txnFailed += l.txnFailed
		uncertain += len(l.spaces) - 1
	}
	t.Logf("%d proposals acknowledged in %v (%d txns applied, %d refused by a condition), %d uncertain",
		acked, time.Since(start).Round(time.Millisecond), txnOK, txnFailed, uncertain)
	// Each leader change can leave every in-flight proposal uncertain; more
	// than a few such rounds mean the cluster was not making progress.
	if acked+uncertain != total || uncertain > total/20 || txnOK == 0 || txnFailed == 0 {
		t.Fatalf("%d of %d acknowledged, %d uncertain (txn ok %d, refused %d): too little to check",
			acked, total, uncertain, txnOK, txnFailed)
	}

	known := map[string]bool{}
	for _, l := range logs {
		for _, sp := range l.spaces {
			for k := 0; k < coreKeysPerSpace; k++ {
				known[sp.key(k)] = true
			}
		}
	}
	// Linearizable reads on every replica agree with the model.
	checkReplicas := func(extra kvModel) {
		t.Helper()
		for _, n := range c.Running() {
			for _, l := range logs {
				for _, sp := range l.spaces {
					checkSpace(ctx, t, n, sp)
				}
			}
			for k, want := range extra {
				var v []byte
				var found bool
				err := testcluster.Retry(ctx, func(ctx context.Context) error {
					var err error
					v, found, err = n.Client.Get(ctx, []byte(k))
					return err
				})
				if err != nil || !found || string(v) != want {
					t.Fatalf("replica %d: %s = %q %v %v, want %q", n.ReplicaID, k, v, found, err, want)
				}
			}
			// And nothing outside the model exists.
			page, err := n.Client.Scan(ctx, client.ScanQuery{Limit: 10000})
			if err != nil {
				t.Fatalf("replica %d: scan: %v", n.ReplicaID, err)
			}
			if page.More {
				t.Fatalf("replica %d: more than 10000 keys", n.ReplicaID)
			}
			for _, kv := range page.Pairs {
				if k := string(kv.Key); !known[k] {
					if _, ok := extra[k]; !ok {
						t.Fatalf("replica %d holds a key no one wrote: %q", n.ReplicaID, k)
					}
				}
			}
		}
	}
	checkReplicas(nil)

	// Every replica at one applied index holds the same state.
	hashes := c.WaitConverged(30 * time.Second)
	checkSameHash(t, hashes)
	t.Logf("replicas converged at index %d, %d keys", anyHash(hashes).AppliedIndex, anyHash(hashes).Keys)

	// Restart a follower: it must reopen at its persisted index, without a
	// snapshot, and catch up from the log while it was down.
	leader := c.Leader()
	var f *testcluster.Node
	for _, n := range c.Running() {
		if n.ReplicaID != leader.ReplicaID {
			f = n
			break
		}
	}
	fid := f.ReplicaID
	dataDir := f.Factory.Config().DataDir(c.ShardID, fid)
	c.Stop(fid)
	persisted := readAppliedIndex(t, dataDir)
	if persisted < uint64(acked) {
		t.Fatalf("replica %d persisted index %d is below the %d acknowledged writes it applied", fid, persisted, acked)
	}

	// Write while it is down: new keys, overwrites and deletes of old ones.
	extra := kvModel{}
	for i := 0; i < 300; i++ {
		k, v := fmt.Sprintf("down/%04d", i), fmt.Sprintf("v%d", i)
		if err := testcluster.Retry(ctx, func(ctx context.Context) error {
			return c.Leader().Client.Put(ctx, []byte(k), []byte(v))
		}); err != nil {
			t.Fatalf("put %s while replica %d is down: %v", k, fid, err)
		}
		extra[k] = v
	}
	for w := 0; w < 4; w++ {
		sp := logs[w].spaces[len(logs[w].spaces)-1] // the one without an uncertain op
		k := sp.key(0)
		if err := testcluster.Retry(ctx, func(ctx context.Context) error {
			return c.Leader().Client.Delete(ctx, []byte(k))
		}); err != nil {
			t.Fatalf("delete %s: %v", k, err)
		}
		delete(sp.model, k)
	}
	ahead := c.WaitConverged(30 * time.Second)
	checkSameHash(t, ahead)
	if anyHash(ahead).AppliedIndex <= persisted {
		t.Fatalf("the cluster did not advance while replica %d was down", fid)
	}

	c.Start(fid)
	c.WaitFor(30*time.Second, "the restarted replica to open", func() bool {
		return len(rec.openResults(fid)) == 2
	})
	if got := rec.openResults(fid); got[1] != persisted {
		t.Fatalf("restarted replica %d: Open returned %d, its image holds %d", fid, got[1], persisted)
	}
	hashes = c.WaitConverged(30 * time.Second)
	checkSameHash(t, hashes)
	// No writes happened since ahead, so unless a new leader appended an
	// empty entry, the restarted replica is exactly where the others were.
	if h, was := hashes[fid], anyHash(ahead); h.AppliedIndex < was.AppliedIndex ||
		(h.AppliedIndex == was.AppliedIndex && h != was) {
		t.Fatalf("restarted replica %d at %+v, cluster was at %+v", fid, h, was)
	}
	for id := uint64(1); id <= 3; id++ {
		if n := rec.recoverCount(id); n != 0 {
			t.Fatalf("replica %d installed %d snapshots; catch-up must come from the log", id, n)
		}
	}
	checkReplicas(extra)
	t.Logf("replica %d reopened at %d and caught up to %d from the log", fid, persisted, hashes[fid].AppliedIndex)
}

// checkSpace reads every key of sp linearizably through n and checks it
// against the states the space may be in.
func checkSpace(ctx context.Context, t *testing.T, n *testcluster.Node, sp *keySpace) {
	t.Helper()
	states := sp.possibleStates()
	for k := 0; k < coreKeysPerSpace; k++ {
		key := sp.key(k)
		var v []byte
		var found bool
		err := testcluster.Retry(ctx, func(ctx context.Context) error {
			var err error
			v, found, err = n.Client.Get(ctx, []byte(key))
			return err
		})
		if err != nil {
			t.Fatalf("replica %d: get %s: %v", n.ReplicaID, key, err)
		}
		ok := false
		for _, s := range states {
			want, wantFound := s[key]
			if found == wantFound && string(v) == want {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("replica %d: %s = %q (found %v); model: %q (uncertain op %+v)",
				n.ReplicaID, key, v, found, sp.model[key], sp.uncertain)
		}
	}
}

func readAppliedIndex(t *testing.T, dataDir string) uint64 {
	t.Helper()
	e, err := engine.OpenRoot(dataDir, engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open %s offline: %v", dataDir, err)
	}
	defer e.Close()
	idx, err := e.AppliedIndex()
	if err != nil {
		t.Fatalf("read applied index in %s: %v", dataDir, err)
	}
	return idx
}

func anyHash(m map[uint64]engine.StateHash) engine.StateHash {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return m[ids[0]]
}

func checkSameHash(t *testing.T, m map[uint64]engine.StateHash) {
	t.Helper()
	if len(m) < 2 {
		t.Fatalf("only %d replicas to compare", len(m))
	}
	first := anyHash(m)
	for id, h := range m {
		if h != first {
			t.Fatalf("replica %d: %+v differs from %+v", id, h, first)
		}
	}
}
