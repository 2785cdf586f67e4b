package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keel-db/keel/internal/testkit/proctest"
)

// Fault kinds, the keys of the summary's faults map.
const (
	faultKill             = "kill"         // SIGKILL a random replica, restart
	faultKillLeader       = "kill_leader"  // SIGKILL the leader, restart
	faultPause            = "pause"        // SIGSTOP a random follower, SIGCONT
	faultPauseLeader      = "pause_leader" // SIGSTOP the leader past an election, SIGCONT
	faultKillCompaction   = "kill_after_compaction"
	faultKillStreamSender = "kill_during_stream_sender"
	faultKillInstall      = "kill_during_install"
	faultLagCatchUp       = "lag_catch_up" // a follower fell behind and caught up without being killed
)

// nemesis injects faults one at a time; every fault is undone (process
// restarted or continued) before the next starts, so at most one replica
// is out at any moment and the shard keeps a quorum between faults.
type nemesis struct {
	c   *cluster
	rng *rand.Rand
	log io.Writer
	mon *monitor
	// snapshots is true when keeld takes frequent snapshots and compacts
	// its log, so a lagging follower needs a snapshot stream.
	snapshots bool
	// streams is true when the log window is short enough that a follower
	// paused for seconds can only catch up by a snapshot stream.
	streams bool

	// filler writes through the leader while a follower is held back.
	filler *worker

	mu     sync.Mutex // guards counts
	counts map[string]int
}

func (n *nemesis) count(kind string) {
	n.mu.Lock()
	n.counts[kind]++
	n.mu.Unlock()
}

func (n *nemesis) total() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := 0
	for k, v := range n.counts {
		if k != faultLagCatchUp {
			t += v
		}
	}
	return t
}

func (n *nemesis) countsCopy() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := make(map[string]int, len(n.counts))
	for k, v := range n.counts {
		m[k] = v
	}
	return m
}

func (n *nemesis) logf(format string, a ...any) {
	fmt.Fprintf(n.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
}

func (n *nemesis) sleep(ctx context.Context, min, max time.Duration) {
	d := min + time.Duration(n.rng.Int64N(int64(max-min)+1))
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// run injects faults until ctx is done; it returns the first error that
// means the harness, not Keel, lost control (a process that will not start).
func (n *nemesis) run(ctx context.Context) error {
	type fault struct {
		kind   string
		weight int
		do     func(context.Context) error
	}
	faults := []fault{
		{faultKill, 3, n.kill},
		{faultKillLeader, 2, n.killLeader},
		{faultPause, 2, n.pause},
		{faultPauseLeader, 2, n.pauseLeader},
	}
	if n.snapshots {
		faults = append(faults,
			fault{faultKillCompaction, 2, n.killAfterCompaction},
		)
	}
	if n.streams {
		faults = append(faults, fault{faultKillInstall, 3, n.lagThenKill})
	}
	sum := 0
	for _, f := range faults {
		sum += f.weight
	}
	for ctx.Err() == nil {
		n.sleep(ctx, 100*time.Millisecond, 800*time.Millisecond)
		if ctx.Err() != nil {
			return nil
		}
		p := n.rng.IntN(sum)
		for _, f := range faults {
			if p -= f.weight; p < 0 {
				if err := f.do(ctx); err != nil {
					return fmt.Errorf("%s: %w", f.kind, err)
				}
				break
			}
		}
	}
	return nil
}

func (n *nemesis) randomReplica() *replica { return n.c.replicas[n.rng.IntN(len(n.c.replicas))] }

// follower returns a random replica that is not the leader.
func (n *nemesis) follower() *replica {
	l := n.c.leader()
	var fs []*replica
	for _, r := range n.c.replicas {
		if r != l {
			fs = append(fs, r)
		}
	}
	return fs[n.rng.IntN(len(fs))]
}

// restart starts r again and waits until it serves /status (not until it
// caught up: the next fault may hit a replica still recovering).
func (n *nemesis) restart(r *replica) error {
	if err := r.start(); err != nil {
		return err
	}
	if err := proctest.WaitJSON[map[string]any](r.current(), statusClient, r.url("/status"), 60*time.Second, nil); err != nil {
		return fmt.Errorf("replica %d: restart: %w", r.id, err)
	}
	return nil
}

func (n *nemesis) killRestart(ctx context.Context, r *replica, kind string) error {
	n.logf("%s: SIGKILL replica %d", kind, r.id)
	if err := r.kill(); err != nil {
		return err
	}
	n.count(kind)
	n.sleep(ctx, 0, 1500*time.Millisecond)
	n.logf("%s: restart replica %d", kind, r.id)
	return n.restart(r)
}

func (n *nemesis) kill(ctx context.Context) error {
	return n.killRestart(ctx, n.randomReplica(), faultKill)
}

// randomShard is one of the cluster's shards; the leader faults hit a
// random shard's leader, which usually leads some others too.
func (n *nemesis) randomShard() int { return 1 + n.rng.IntN(n.c.shards) }

func (n *nemesis) killLeader(ctx context.Context) error {
	l := n.c.leaderOf(n.randomShard())
	if l == nil {
		return nil // mid-election; try another fault
	}
	return n.killRestart(ctx, l, faultKillLeader)
}

func (n *nemesis) pauseFor(ctx context.Context, r *replica, kind string, min, max time.Duration) error {
	n.logf("%s: SIGSTOP replica %d", kind, r.id)
	if err := r.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	n.count(kind)
	// SIGCONT must follow even when the run ends mid-pause.
	n.sleep(context.Background(), min, max)
	n.logf("%s: SIGCONT replica %d", kind, r.id)
	return r.signal(syscall.SIGCONT)
}

func (n *nemesis) pause(ctx context.Context) error {
	return n.pauseFor(ctx, n.follower(), faultPause, 300*time.Millisecond, 2*time.Second)
}

// pauseLeader stops the leader for longer than an election (ElectionRTT 10
// x 20 ms): the others elect a new leader, the old one wakes as a stale
// leader and must step down.
func (n *nemesis) pauseLeader(ctx context.Context) error {
	l := n.c.leaderOf(n.randomShard())
	if l == nil {
		return nil
	}
	return n.pauseFor(ctx, l, faultPauseLeader, 800*time.Millisecond, 3*time.Second)
}

// killAfterCompaction waits (bounded) for the leader's log to be compacted
// — its first index moves — and SIGKILLs it at once.
func (n *nemesis) killAfterCompaction(ctx context.Context) error {
	l := n.c.leader()
	if l == nil {
		return nil
	}
	st, err := l.status()
	if err != nil {
		return nil
	}
	first, comps := st.LogFirstIndex, rawCounter(st, "raft_log.compactions")
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		cur, err := l.status()
		if err != nil || !cur.IsLeader {
			return nil
		}
		if cur.LogFirstIndex > first || rawCounter(cur, "raft_log.compactions") > comps {
			return n.killRestart(ctx, l, faultKillCompaction)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	return nil
}

// lagThenKill keeps a follower of shard 1 down until the leader has
// compacted shard 1's log past the follower's log, so that the follower can only catch up by a
// snapshot stream; it then restarts it and SIGKILLs either the receiver
// (during receive or install) or the sender (during the stream).
func (n *nemesis) lagThenKill(ctx context.Context) error {
	f := n.follower()
	st, err := f.status()
	if err != nil {
		return nil
	}
	// SIGKILL, not SIGSTOP: a stopped process's socket buffers keep the
	// leader's appends, so it catches up from them without a stream.
	n.logf("lag: SIGKILL follower %d at applied %d, log last %d", f.id, st.AppliedIndex, st.LogLastIndex)
	if err := f.kill(); err != nil {
		return err
	}
	// The clients alone may write too slowly on a loaded machine for the
	// leader to compact past the follower in time, so the nemesis adds
	// writes of its own: ack/ keys, recorded and checked like the clients'.
	behind := false
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		l := n.c.leader()
		if l == nil {
			time.Sleep(50 * time.Millisecond) // no leader yet: poll again
			continue
		}
		// The follower's log may hold entries it had not applied; the
		// leader streams only when its log starts past the follower's.
		if ls, err := l.status(); err == nil && ls.LogFirstIndex > max(st.AppliedIndex, st.LogLastIndex)+1 {
			behind = true
			break
		}
		for i := 0; i < 20; i++ {
			// Keys of shard 1, whose log (the top-level /status
			// fields) this fault watches.
			n.filler.seq++
			key := fmt.Sprintf("%snemesis/%d", ackPrefix, n.filler.seq)
			for ; shardOf(key, n.c.shards) != 1; key = fmt.Sprintf("%snemesis/%d", ackPrefix, n.filler.seq) {
				n.filler.seq++
			}
			r := &record{Client: n.filler.client, Kind: opPut, Key: key, Value: fmt.Sprintf("n%d", n.filler.seq)}
			n.filler.do(r, l)
			if r.Outcome == outcomeUnknown {
				n.filler.client = n.filler.h.newClientID()
			}
		}
	}
	// Time the kill by the leader's counters: PrepareSnapshot runs only for
	// a stream (periodic snapshots of an on-disk state machine are
	// metadata-only), so "prepared" rising means a stream has begun. The
	// baseline is read before SIGCONT: the stream starts within a heartbeat.
	l := n.c.leader()
	var prepared float64
	if l != nil {
		if ls, err := l.status(); err == nil {
			prepared = rawCounter(ls, "snapshots.prepared")
		}
	}
	n.logf("lag: restart follower %d (behind the compacted log: %v)", f.id, behind)
	if err := n.restart(f); err != nil {
		return err
	}
	if !behind || l == nil {
		n.count(faultLagCatchUp)
		return nil
	}
	streaming := false
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		cur, err := l.status()
		if err != nil {
			break
		}
		if rawCounter(cur, "snapshots.prepared") > prepared {
			streaming = true
			break
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	if !streaming {
		n.logf("lag: no stream to follower %d seen", f.id)
		n.count(faultLagCatchUp)
		return nil
	}
	if n.rng.IntN(3) == 0 {
		return n.killRestart(ctx, l, faultKillStreamSender)
	}
	// The receiver buffers the stream, then installs: a random delay
	// spreads the kill over both.
	time.Sleep(time.Duration(n.rng.Int64N(int64(500 * time.Millisecond))))
	return n.killRestart(ctx, f, faultKillInstall)
}

// rawCounter reads a dotted numeric field of a /status answer; 0 if absent.
func rawCounter(st status, name string) float64 {
	var v float64
	flatten("", st.Raw, func(k string, x float64) {
		if k == name {
			v = x
		}
	})
	return v
}

// monitor samples /status of every running replica and accumulates the
// counters it finds (any numeric field whose name mentions snapshot or
// compaction), per incarnation, plus log compactions seen as a rising
// log_first_index.
type monitor struct {
	c *cluster

	mu sync.Mutex // guards the fields below
	// inc[replica] holds the current incarnation's maxima; acc the sums of
	// finished incarnations.
	inc         map[int]map[string]float64
	incStart    map[int]int
	acc         map[string]float64
	firstIndex  map[int]uint64
	compactions int
	samples     int
}

func newMonitor(c *cluster) *monitor {
	return &monitor{c: c, inc: map[int]map[string]float64{}, incStart: map[int]int{},
		acc: map[string]float64{}, firstIndex: map[int]uint64{}}
}

func counterField(name string) bool {
	return strings.HasPrefix(name, "snapshots.") || strings.HasPrefix(name, "raft_log.compactions")
}

func (m *monitor) run(ctx context.Context) {
	for ctx.Err() == nil {
		m.sample()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *monitor) sample() {
	for _, r := range m.c.replicas {
		if r.getState() != stateUp {
			continue
		}
		r.mu.Lock()
		starts := r.starts
		r.mu.Unlock()
		st, err := r.status()
		if err != nil {
			continue
		}
		m.mu.Lock()
		m.samples++
		if m.incStart[r.id] != starts {
			for k, v := range m.inc[r.id] {
				m.acc[k] += v
			}
			m.inc[r.id] = map[string]float64{}
			m.incStart[r.id] = starts
		}
		flatten("", st.Raw, func(k string, v float64) {
			if counterField(k) && v > m.inc[r.id][k] {
				m.inc[r.id][k] = v
			}
		})
		if prev, ok := m.firstIndex[r.id]; ok && st.LogFirstIndex > prev {
			m.compactions++
		}
		m.firstIndex[r.id] = st.LogFirstIndex
		m.mu.Unlock()
	}
}

// counters returns the accumulated counters over all incarnations.
func (m *monitor) counters() (map[string]float64, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]float64{}
	for k, v := range m.acc {
		out[k] += v
	}
	for _, inc := range m.inc {
		for k, v := range inc {
			out[k] += v
		}
	}
	return out, m.compactions
}

// flatten walks nested JSON objects, calling f for each numeric leaf with
// a dotted name.
func flatten(prefix string, v any, f func(string, float64)) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			flatten(name, x[k], f)
		}
	case interface{ Float64() (float64, error) }:
		if fv, err := x.Float64(); err == nil {
			f(prefix, fv)
		}
	}
}
