package sm

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"testing"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4/statemachine"
)

// openSM opens a state machine on dir and closes it at the end of the test.
func openSM(t *testing.T, dir string, shard, replica uint64) (*StateMachine, uint64) {
	t.Helper()
	s := New(Config{Dir: dir, ShardID: shard, ReplicaID: replica})
	applied, err := s.Open(make(chan struct{}))
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, applied
}

func mustEncode(t testing.TB, c Command) []byte {
	t.Helper()
	b, err := c.Encode()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func put(t testing.TB, k, v string) []byte {
	return mustEncode(t, Command{Op: OpPut, Key: []byte(k), Value: []byte(v)})
}

func del(t testing.TB, k string) []byte { return mustEncode(t, Command{Op: OpDelete, Key: []byte(k)}) }

func delRange(t testing.TB, a, b string) []byte {
	return mustEncode(t, Command{Op: OpDeleteRange, Key: []byte(a), End: []byte(b)})
}

func txn(t testing.TB, conds []Cond, ops []TxnOp) []byte {
	return mustEncode(t, Command{Op: OpTxn, Conds: conds, Ops: ops})
}

// entries numbers cmds as Raft entries from index first.
func entries(first uint64, cmds ...[]byte) []statemachine.Entry {
	out := make([]statemachine.Entry, len(cmds))
	for i, c := range cmds {
		out[i] = statemachine.Entry{Index: first + uint64(i), Cmd: c}
	}
	return out
}

func update(t *testing.T, s *StateMachine, es []statemachine.Entry) []statemachine.Entry {
	t.Helper()
	out, err := s.Update(es)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if len(out) != len(es) {
		t.Fatalf("update returned %d entries for %d", len(out), len(es))
	}
	return out
}

func lookupGet(t *testing.T, s *StateMachine, k string) (string, bool) {
	t.Helper()
	r, err := s.Lookup(GetQuery{Key: []byte(k)})
	if err != nil {
		t.Fatalf("get %q: %v", k, err)
	}
	g := r.(GetResult)
	return string(g.Value), g.Found
}

func stateHash(t *testing.T, s *StateMachine) engine.StateHash {
	t.Helper()
	r, err := s.Lookup(HashQuery{})
	if err != nil {
		t.Fatalf("hash: %v", err)
	}
	return r.(engine.StateHash)
}

// dump returns every key and value through a Scan lookup.
func dump(t *testing.T, s *StateMachine) map[string]string {
	t.Helper()
	out := map[string]string{}
	q := ScanQuery{Limit: 7} // small pages exercise More/NextKey
	for {
		r, err := s.Lookup(&q)
		if err != nil {
			t.Fatalf("scan: %v", err)
		}
		res := r.(ScanResult)
		for _, kv := range res.Pairs {
			out[string(kv.Key)] = string(kv.Value)
		}
		if !res.More {
			return out
		}
		if len(res.Pairs) != q.Limit || res.NextKey == nil {
			t.Fatalf("page with More has %d pairs and next %q", len(res.Pairs), res.NextKey)
		}
		q.Start = res.NextKey
	}
}

// model is an obviously-correct map implementation of apply, the oracle
// for the state machine's results and contents.
type model map[string]string

func (m model) apply(cmd []byte) statemachine.Result {
	c, err := Decode(cmd)
	if err != nil {
		return invalidResult(err)
	}
	switch c.Op {
	case OpPut:
		m[string(c.Key)] = string(c.Value)
	case OpDelete:
		delete(m, string(c.Key))
	case OpDeleteRange:
		for k := range m {
			if k >= string(c.Key) && k < string(c.End) {
				delete(m, k)
			}
		}
	case OpTxn:
		for i, cd := range c.Conds {
			v, ok := m[string(cd.Key)]
			holds := map[CondKind]bool{CondAbsent: !ok, CondExists: ok, CondValueEquals: ok && v == string(cd.Value)}[cd.Kind]
			if !holds {
				return preconditionResult(i)
			}
		}
		for _, op := range c.Ops {
			if op.Op == OpPut {
				m[string(op.Key)] = string(op.Value)
			} else {
				delete(m, string(op.Key))
			}
		}
	}
	return okResult()
}

// workload returns n commands: random valid commands (so transactions both
// pass and fail) and a share of invalid ones.
func workload(t *testing.T, r *rand.Rand, n int) [][]byte {
	var out [][]byte
	for len(out) < n {
		switch r.IntN(20) {
		case 0:
			out = append(out, nil) // empty entry
		case 1:
			g := make([]byte, r.IntN(32))
			for i := range g {
				g[i] = byte(r.Uint32())
			}
			out = append(out, g) // garbage
		case 2:
			out = append(out, make([]byte, MaxCommandSize+1+r.IntN(3))) // oversized
		case 3:
			enc := mustEncode(t, randCommand(r))
			out = append(out, enc[:r.IntN(len(enc))]) // truncated
		case 4:
			// A transaction whose conditions refer to keys written just
			// before it in the same batch.
			k := randBytes(r, 1, 3)
			out = append(out, mustEncode(t, Command{Op: OpPut, Key: k, Value: []byte("x")}))
			out = append(out, mustEncode(t, Command{Op: OpTxn,
				Conds: []Cond{{Kind: CondValueEquals, Key: k, Value: []byte("x")}},
				Ops:   []TxnOp{{Op: OpPut, Key: k, Value: []byte("y")}}}))
		default:
			out = append(out, mustEncode(t, randCommand(r)))
		}
	}
	return out
}

// applySplit applies cmds as entries 1..n, cut into Update calls of random
// sizes, and returns the results in entry order.
func applySplit(t *testing.T, s *StateMachine, cmds [][]byte, r *rand.Rand, maxBatch int) []statemachine.Result {
	all := entries(1, cmds...)
	var res []statemachine.Result
	for len(all) > 0 {
		n := 1 + r.IntN(maxBatch)
		if n > len(all) {
			n = len(all)
		}
		for _, e := range update(t, s, all[:n]) {
			res = append(res, e.Result)
		}
		all = all[n:]
	}
	return res
}

func TestDeterministicApply(t *testing.T) {
	seed := testutil.Seed(t)
	r := rand.New(rand.NewPCG(seed, 2))
	n := 1500
	if testing.Short() {
		n = 300
	}
	cmds := workload(t, r, n)
	a, _ := openSM(t, t.TempDir(), 1, 1)
	b, _ := openSM(t, t.TempDir(), 1, 2)
	ra := applySplit(t, a, cmds, rand.New(rand.NewPCG(seed, 3)), 1)  // one entry per Update
	rb := applySplit(t, b, cmds, rand.New(rand.NewPCG(seed, 4)), 64) // random batches

	m := model{}
	counts := map[Code]int{}
	for i, cmd := range cmds {
		want := m.apply(cmd)
		counts[Code(want.Value)]++
		if ra[i].Value != rb[i].Value || !bytes.Equal(ra[i].Data, rb[i].Data) {
			t.Fatalf("entry %d: replicas disagree: %+v vs %+v", i+1, ra[i], rb[i])
		}
		if ra[i].Value != want.Value || !bytes.Equal(ra[i].Data, want.Data) {
			t.Fatalf("entry %d: got %s %q, model says %s %q", i+1,
				Code(ra[i].Value), ra[i].Data, Code(want.Value), want.Data)
		}
	}
	for _, c := range []Code{CodeOK, CodePreconditionFailed, CodeInvalidCommand} {
		if counts[c] == 0 {
			t.Fatalf("workload never produced %s (counts %v): the test would not see it", c, counts)
		}
	}
	t.Logf("results: %v", counts)

	ha, hb := stateHash(t, a), stateHash(t, b)
	if ha != hb {
		t.Fatalf("state hashes differ:\n%+v\n%+v", ha, hb)
	}
	if ha.AppliedIndex != uint64(len(cmds)) || a.AppliedIndex() != uint64(len(cmds)) {
		t.Fatalf("applied index %d/%d, want %d", ha.AppliedIndex, a.AppliedIndex(), len(cmds))
	}
	if got := dump(t, a); !sameMap(got, m) {
		t.Fatalf("state differs from the model:\n got %q\nwant %q", sortedKeys(got), sortedKeys(m))
	}
	if ha.Keys != uint64(len(m)) {
		t.Fatalf("hash counted %d keys, model has %d", ha.Keys, len(m))
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestAlreadyAppliedEntriesAreSkipped(t *testing.T) {
	s, _ := openSM(t, t.TempDir(), 1, 1)
	update(t, s, entries(1, put(t, "a", "1"), put(t, "b", "1"), put(t, "c", "1")))
	before := stateHash(t, s)

	// Replays at and below the applied index change nothing, even if the
	// command would now do something else.
	out := update(t, s, entries(2, put(t, "a", "2"), del(t, "c")))
	for _, e := range out {
		if Code(e.Result.Value) != CodeAlreadyApplied {
			t.Fatalf("entry %d: %s, want already applied", e.Index, Code(e.Result.Value))
		}
	}
	if after := stateHash(t, s); after != before {
		t.Fatalf("replay changed state: %+v -> %+v", before, after)
	}

	// A batch straddling the applied index applies only the new part.
	out = update(t, s, entries(3, del(t, "a"), put(t, "d", "1")))
	if Code(out[0].Result.Value) != CodeAlreadyApplied || Code(out[1].Result.Value) != CodeOK {
		t.Fatalf("straddling batch: %v, %v", Code(out[0].Result.Value), Code(out[1].Result.Value))
	}
	if _, ok := lookupGet(t, s, "a"); !ok {
		t.Fatalf("skipped delete of a was applied")
	}
	if v, _ := lookupGet(t, s, "d"); v != "1" || s.AppliedIndex() != 4 {
		t.Fatalf("d=%q applied=%d", v, s.AppliedIndex())
	}
}

func TestOpenReturnsPersistedIndex(t *testing.T) {
	dir := t.TempDir()
	s, applied := openSM(t, dir, 3, 7)
	if applied != 0 {
		t.Fatalf("fresh open applied %d", applied)
	}
	update(t, s, entries(1, put(t, "a", "1"), put(t, "b", "2")))
	update(t, s, entries(3, []byte("garbage"))) // invalid entries still advance the index
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Lookup(GetQuery{Key: []byte("a")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("lookup after close: %v", err)
	}
	if _, err := s.Update(entries(4, put(t, "c", "3"))); !errors.Is(err, ErrClosed) {
		t.Fatalf("update after close: %v", err)
	}
	if err := s.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("sync after close: %v", err)
	}

	s2, applied := openSM(t, dir, 3, 7)
	if applied != 3 || s2.AppliedIndex() != 3 {
		t.Fatalf("reopen: Open returned %d, AppliedIndex %d; want 3", applied, s2.AppliedIndex())
	}
	if v, ok := lookupGet(t, s2, "b"); !ok || v != "2" {
		t.Fatalf("b = %q, %v", v, ok)
	}
	// The next entries continue from the persisted index.
	out := update(t, s2, entries(3, put(t, "a", "x"), put(t, "c", "3")))
	if Code(out[0].Result.Value) != CodeAlreadyApplied || Code(out[1].Result.Value) != CodeOK {
		t.Fatalf("after reopen: %v %v", out[0].Result, out[1].Result)
	}
}

func TestOpenRefusesOtherReplica(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSM(t, dir, 1, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range [][2]uint64{{1, 2}, {2, 1}} {
		o := New(Config{Dir: dir, ShardID: id[0], ReplicaID: id[1]})
		if _, err := o.Open(make(chan struct{})); !errors.Is(err, ErrWrongReplica) {
			t.Fatalf("open as %v: got %v, want ErrWrongReplica", id, err)
		}
		// The refused open must not hold the directory.
		if _, err := o.Lookup(GetQuery{}); !errors.Is(err, ErrClosed) {
			t.Fatalf("lookup on refused open: %v", err)
		}
	}
	// The rightful owner still opens it.
	openSM(t, dir, 1, 1)
}

func TestOpenStopped(t *testing.T) {
	stop := make(chan struct{})
	close(stop)
	s := New(Config{Dir: filepath.Join(t.TempDir(), "r")})
	if _, err := s.Open(stop); !errors.Is(err, statemachine.ErrOpenStopped) {
		t.Fatalf("open with closed stopc: %v", err)
	}
}

func TestLookupQueries(t *testing.T) {
	s, _ := openSM(t, t.TempDir(), 1, 1)
	var cmds [][]byte
	for _, k := range []string{"a1", "a2", "a3", "b1", "b2", "c"} {
		cmds = append(cmds, put(t, k, "v"+k))
	}
	update(t, s, entries(1, cmds...))

	if _, err := s.Lookup("what"); !errors.Is(err, ErrUnknownQuery) {
		t.Fatalf("unknown query: %v", err)
	}
	if _, err := s.Lookup(nil); !errors.Is(err, ErrUnknownQuery) {
		t.Fatalf("nil query: %v", err)
	}
	if r, err := s.Lookup(&GetQuery{Key: []byte("a2")}); err != nil || string(r.(GetResult).Value) != "va2" {
		t.Fatalf("get by pointer: %v %v", r, err)
	}
	if v, ok := lookupGet(t, s, "zz"); ok || v != "" {
		t.Fatalf("missing key found: %q", v)
	}

	keys := func(q ScanQuery) (out []string, more bool, next string) {
		r, err := s.Lookup(q)
		if err != nil {
			t.Fatalf("scan %+v: %v", q, err)
		}
		res := r.(ScanResult)
		for _, kv := range res.Pairs {
			out = append(out, string(kv.Key))
		}
		return out, res.More, string(res.NextKey)
	}
	check := func(q ScanQuery, want []string, wantMore bool, wantNext string) {
		t.Helper()
		got, more, next := keys(q)
		if !equalStrings(got, want) || more != wantMore || next != wantNext {
			t.Fatalf("scan %+v = %v more=%v next=%q; want %v %v %q", q, got, more, next, want, wantMore, wantNext)
		}
	}
	check(ScanQuery{}, []string{"a1", "a2", "a3", "b1", "b2", "c"}, false, "")
	check(ScanQuery{Prefix: []byte("a")}, []string{"a1", "a2", "a3"}, false, "")
	check(ScanQuery{Prefix: []byte("a"), Limit: 2}, []string{"a1", "a2"}, true, "a3")
	check(ScanQuery{Start: []byte("a2"), End: []byte("b2")}, []string{"a2", "a3", "b1"}, false, "")
	check(ScanQuery{Start: []byte("b"), End: []byte("a")}, nil, false, "")
	check(ScanQuery{Limit: 6}, []string{"a1", "a2", "a3", "b1", "b2", "c"}, false, "")

	r, err := s.Lookup(StatsQuery{Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	st := r.(engine.Stats)
	if !st.Exact || st.Keys != 6 || st.AppliedIndex != 6 {
		t.Fatalf("stats: %+v", st)
	}
	h1 := stateHash(t, s)
	r, err = s.Lookup(&HashQuery{})
	if err != nil || r.(engine.StateHash) != h1 {
		t.Fatalf("hash by pointer: %v %v", r, err)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTxnSemantics pins the documented transaction rules on a hand-written
// batch: conditions see earlier entries of the same batch (including a
// range delete), a failing transaction writes nothing, and FailedCond is
// the position of the first failing condition.
func TestTxnSemantics(t *testing.T) {
	s, _ := openSM(t, t.TempDir(), 1, 1)
	k := func(s string) []byte { return []byte(s) }
	type step struct {
		cmd        []byte
		code       Code
		failedCond int
	}
	steps := []step{
		{put(t, "a", "1"), CodeOK, 0},
		// Sees "a" written by the previous entry of the same batch.
		{txn(t, []Cond{{Kind: CondValueEquals, Key: k("a"), Value: k("1")}, {Kind: CondAbsent, Key: k("b")}},
			[]TxnOp{{Op: OpPut, Key: k("b"), Value: k("2")}, {Op: OpDelete, Key: k("a")}}), CodeOK, 0},
		// Sees the txn's own effects: a deleted, b written.
		{txn(t, []Cond{{Kind: CondAbsent, Key: k("a")}, {Kind: CondExists, Key: k("b")}, {Kind: CondValueEquals, Key: k("b"), Value: k("wrong")}},
			[]TxnOp{{Op: OpPut, Key: k("x"), Value: k("must not exist")}}), CodePreconditionFailed, 2},
		{txn(t, []Cond{{Kind: CondExists, Key: k("a")}},
			[]TxnOp{{Op: OpPut, Key: k("y"), Value: k("must not exist")}, {Op: OpDelete, Key: k("b")}}), CodePreconditionFailed, 0},
		{put(t, "c", "3"), CodeOK, 0},
		{delRange(t, "b", "c"), CodeOK, 0},
		// The range delete removed b but not c (end is exclusive).
		{txn(t, []Cond{{Kind: CondAbsent, Key: k("b")}, {Kind: CondValueEquals, Key: k("c"), Value: k("3")}},
			[]TxnOp{{Op: OpPut, Key: k("d"), Value: nil}}), CodeOK, 0},
		// An empty value exists and equals the empty string.
		{txn(t, []Cond{{Kind: CondExists, Key: k("d")}, {Kind: CondValueEquals, Key: k("d"), Value: nil}},
			[]TxnOp{{Op: OpPut, Key: k("e"), Value: k("5")}}), CodeOK, 0},
		{del(t, "never-existed"), CodeOK, 0},
	}
	var cmds [][]byte
	for _, st := range steps {
		cmds = append(cmds, st.cmd)
	}
	out := update(t, s, entries(1, cmds...))
	for i, st := range steps {
		o := DecodeResult(out[i].Result)
		if o.Code != st.code || o.FailedCond != st.failedCond {
			t.Fatalf("step %d: got %+v, want %s failed cond %d", i, o, st.code, st.failedCond)
		}
	}
	want := map[string]string{"c": "3", "d": "", "e": "5"}
	if got := dump(t, s); !sameMap(got, want) {
		t.Fatalf("state %v, want %v", got, want)
	}
	if s.AppliedIndex() != uint64(len(steps)) {
		t.Fatalf("applied %d", s.AppliedIndex())
	}
}

func TestInvalidCommandsChangeNothing(t *testing.T) {
	s, _ := openSM(t, t.TempDir(), 1, 1)
	update(t, s, entries(1, put(t, "a", "1")))
	before := dump(t, s)
	bad := [][]byte{nil, {}, {CommandVersion}, []byte("garbage"), make([]byte, MaxCommandSize+1),
		(&Command{Op: OpDeleteRange, Key: []byte("z"), End: []byte("a")}).AppendTo(nil),
		(&Command{Op: OpPut, Key: nil, Value: []byte("v")}).AppendTo(nil)}
	out := update(t, s, entries(2, bad...))
	for i, e := range out {
		o := DecodeResult(e.Result)
		if o.Code != CodeInvalidCommand || o.Reason == "" {
			t.Fatalf("bad command %d: %+v", i, o)
		}
	}
	if got := dump(t, s); !sameMap(got, before) {
		t.Fatalf("invalid commands changed state: %v", got)
	}
	if s.AppliedIndex() != uint64(1+len(bad)) {
		t.Fatalf("invalid entries must still advance the applied index: %d", s.AppliedIndex())
	}
}

// sortedKeys is used in failure messages.
func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
