package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
)

// multiShards is how many shards the multi-shard fixture's NodeHost hosts
// (IDs 1..multiShards, replica 1 of each), as keeld --shards 4 runs them.
const multiShards = 4

// removedShard is a fifth shard the fixture started and then removed the
// way host.RemoveReplica begins (stop, Dragonboat's RemoveData) without
// its last step, deleting the tablet: what a crash between the two leaves.
const removedShard = 5

// multiFixture is one stopped NodeHost directory holding multiShards
// shards, built once: clean is the data dir without the removed shard's
// tablet, leftover the same with it.
var multiFixture struct {
	once            sync.Once
	err             error
	clean, leftover string
	// live is what the NodeHost reported for each shard just before it
	// closed: the oracle for inspect.
	live map[uint64]liveShard
}

type liveShard struct {
	applied, last, snapshot uint64
}

// multiKeys is how many keys the fixture writes to shard s: a different
// count each, so a row mixed up with another shows.
func multiKeys(s uint64) int { return 10 * int(s) }

func multiDir(t *testing.T) (clean, leftover string) {
	t.Helper()
	multiFixture.once.Do(func() {
		multiFixture.err = testutil.Standalone("keelctl multi-shard fixture", buildMultiFixture)
	})
	if multiFixture.err != nil {
		t.Fatal(multiFixture.err)
	}
	return multiFixture.clean, multiFixture.leftover
}

func buildMultiFixture(t testing.TB) {
	testcluster.Quiet()
	root, err := os.MkdirTemp("", "keelctl-multi-")
	if err != nil {
		t.Fatal(err)
	}
	// Removed by TestMain: the tests share it.
	multiFixtureRoot = root
	dir := filepath.Join(root, "leftover")
	addr := testcluster.FreeAddrs(t, 1)[0]
	h, err := host.Open(host.Options{
		NodeHostDir: filepath.Join(dir, "raft"),
		RaftAddress: addr,
		Keel:        host.Config{RootDir: filepath.Join(dir, "sm")},
		// A short tick: single-member shards elect themselves in a few.
		Configure: func(c *config.NodeHostConfig) { c.RTTMillisecond = 5 },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh := h.NodeHost()
	for s := uint64(1); s <= removedShard; s++ {
		if err := h.StartReplica(map[uint64]string{1: addr}, false, host.ShardConfig(s, 1)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put := func(s uint64, k, v string) {
		c := client.NewClient(nh, s)
		if err := testcluster.Retry(ctx, func(ctx context.Context) error { return c.Put(ctx, []byte(k), []byte(v)) }); err != nil {
			t.Fatalf("shard %d: put %s: %v", s, k, err)
		}
	}
	// A linearizable read per shard first, as testcluster.WaitReady does. A
	// proposal does not wake a quiesced replica, a read does: a replica
	// whose tablet opened slowly has its queued ticks run in one batch,
	// skips every election in it (its bootstrap config change is committed
	// but not yet applied) and quiesces leaderless, dropping proposals
	// until something other than a proposal arrives.
	for s := uint64(1); s <= removedShard; s++ {
		c := client.NewClient(nh, s)
		if err := testcluster.Retry(ctx, func(ctx context.Context) error {
			_, _, err := c.Get(ctx, []byte("keelctl-fixture-ready"))
			return err
		}); err != nil {
			t.Fatalf("shard %d: first read: %v", s, err)
		}
	}
	for s := uint64(1); s <= removedShard; s++ {
		for i := 0; i < multiKeys(s); i++ {
			put(s, fmt.Sprintf("s%d/key/%03d", s, i), fmt.Sprintf("v%d-%d", s, i))
		}
	}
	// Snapshots on the even shards, then one more write there, so the rows
	// differ in snapshot index and the log does not end at the snapshot.
	for s := uint64(2); s <= multiShards; s += 2 {
		if err := testcluster.Retry(ctx, func(ctx context.Context) error {
			_, err := nh.SyncRequestSnapshot(ctx, s, dragonboat.DefaultSnapshotOption)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		put(s, fmt.Sprintf("s%d/last", s), "after snapshot")
	}
	// host.RemoveReplica without its last step.
	if err := nh.StopReplica(removedShard, 1); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		err := nh.SyncRemoveData(rctx, removedShard, 1)
		if errors.Is(err, dragonboat.ErrShardNotStopped) {
			return err
		}
		if err != nil {
			t.Fatal(err)
		}
		return nil
	})
	live := map[uint64]liveShard{}
	for s := uint64(1); s <= multiShards; s++ {
		lr, err := nh.GetLogReader(s)
		if err != nil {
			t.Fatal(err)
		}
		_, last := lr.GetRange()
		live[s] = liveShard{applied: h.Factory().StateMachine(s, 1).AppliedIndex(), last: last, snapshot: lr.Snapshot().Index}
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	clean := filepath.Join(root, "clean")
	if err := os.CopyFS(clean, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(clean, "sm", fmt.Sprintf("shard-%d", removedShard))); err != nil {
		t.Fatal(err)
	}
	multiFixture.clean, multiFixture.leftover, multiFixture.live = clean, dir, live
}

// multiFixtureRoot is removed by TestMain.
var multiFixtureRoot string

// TestMultiShardInspect: inspect on a NodeHost directory with several
// shards lists every one with what the live NodeHost reported; --shard
// gives today's detailed view of one.
func TestMultiShardInspect(t *testing.T) {
	clean, _ := multiDir(t)
	r := keelctl("inspect", "--json", "--exact", clean)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rows []shardRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("bad JSON %q: %v", r.stdout, err)
	}
	if len(rows) != multiShards {
		t.Fatalf("%d rows, want %d: %s", len(rows), multiShards, r.stdout)
	}
	for i, row := range rows {
		s := uint64(i + 1)
		live := multiFixture.live[s]
		keys := uint64(multiKeys(s))
		if s%2 == 0 {
			keys++
		}
		if row.ShardID != s || row.ReplicaID != 1 || row.Keys != keys || !row.Exact || row.Error != "" {
			t.Fatalf("row %d: %+v", i, row)
		}
		if row.RaftLog == nil {
			t.Fatalf("shard %d: no raft log: %s", s, row.RaftLogError)
		}
		if row.AppliedIndex != live.applied || row.RaftLog.LastIndex != live.last ||
			row.RaftLog.SnapshotIndex != live.snapshot || row.RaftLog.FirstIndex != live.snapshot+1 {
			t.Fatalf("shard %d: row %+v log %+v, NodeHost reported %+v", s, row, *row.RaftLog, live)
		}
		if (s%2 == 0) != (live.snapshot > 0) {
			t.Fatalf("shard %d: NodeHost reported %+v: the fixture is not the case under test", s, live)
		}
	}
	r = keelctl("inspect", clean)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for s := uint64(1); s <= multiShards; s++ {
		live := multiFixture.live[s]
		row := fmt.Sprintf(`(?m)^ +%d +1 +%d +\d+ +\d+ +%d +%d +%d$`, s, live.applied, live.snapshot+1, live.last, live.snapshot)
		if !regexp.MustCompile(row).MatchString(r.stdout) {
			t.Fatalf("no row matching %q in\n%s", row, r.stdout)
		}
	}
	r = keelctl("inspect", "--shard", "2", clean)
	if r.code != 0 || !regexp.MustCompile(`(?m)^shard +2$`).MatchString(r.stdout) ||
		!regexp.MustCompile(fmt.Sprintf(`(?m)^applied index +%d$`, multiFixture.live[2].applied)).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "level") {
		t.Fatalf("inspect --shard 2: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestMultiShardCheck: check without --shard checks every shard; a tablet
// whose replica the LogDB does not know (a removal cut short, or a copy)
// is named and fails the check.
func TestMultiShardCheck(t *testing.T) {
	clean, leftover := multiDir(t)
	r := keelctl("check", clean)
	if r.code != 0 || strings.Count(r.stdout, " OK\n") != multiShards || !strings.Contains(r.stdout, fmt.Sprintf("OK: %d replicas", multiShards)) {
		t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	notHosted := func(s, rep int) string {
		return fmt.Sprintf("tablet for shard %d replica %d is not hosted by this NodeHost", s, rep)
	}
	t.Run("removal cut short", func(t *testing.T) {
		r := keelctl("check", leftover)
		if r.code != exitProblems || !strings.Contains(r.stdout, notHosted(removedShard, 1)) ||
			!strings.Contains(r.stdout, fmt.Sprintf("PROBLEMS in 1 of %d replicas", multiShards+1)) {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		assertOneLineErrors(t, r)
		r = keelctl("check", "--shard", fmt.Sprint(removedShard), leftover)
		if r.code != exitProblems || !strings.Contains(r.stdout, "PROBLEM: "+notHosted(removedShard, 1)) {
			t.Fatalf("--shard %d: exit %d\n%s%s", removedShard, r.code, r.stdout, r.stderr)
		}
		// The other shards are still fine one by one.
		if r := keelctl("check", "--shard", "1", leftover); r.code != 0 {
			t.Fatalf("--shard 1: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("copied tablet", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "node")
		if err := os.CopyFS(dir, os.DirFS(clean)); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(filepath.Join(dir, "sm", "shard-9", "replica-3"), os.DirFS(filepath.Join(clean, "sm", "shard-1", "replica-1"))); err != nil {
			t.Fatal(err)
		}
		r := keelctl("check", "--json", dir)
		var rep checkAllReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("bad JSON %q: %v", r.stdout, err)
		}
		if r.code != exitProblems || rep.OK || rep.Failed != 1 || len(rep.Replicas) != multiShards+1 {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		bad := rep.Replicas[multiShards]
		if bad.ShardID != 9 || bad.ReplicaID != 3 || !strings.Contains(strings.Join(bad.Problems, "\n"), notHosted(9, 3)) {
			t.Fatalf("report %+v", bad)
		}
		// inspect shows it too, as a row without a log.
		r = keelctl("inspect", dir)
		if r.code != 0 || !strings.Contains(r.stdout, "shard 9 replica 3: raft log unavailable: not hosted by this NodeHost") {
			t.Fatalf("inspect: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
}

// TestMultiShardData: get, scan, hash and export need --shard on a
// multi-shard directory, and read the right shard with it.
func TestMultiShardData(t *testing.T) {
	clean, _ := multiDir(t)
	out := filepath.Join(t.TempDir(), "out")
	for _, args := range [][]string{
		{"get", clean, "s2/key/001"}, {"scan", clean}, {"hash", clean}, {"export", clean, out},
	} {
		r := keelctl(args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "choose one: --shard 1 --replica 1, --shard 2 --replica 1,") {
			t.Fatalf("%s without --shard: exit %d %q", args[0], r.code, r.stderr)
		}
	}
	r := keelctl("get", "--shard", "2", clean, "s2/key/007")
	if r.code != 0 || r.stdout != "v2-7\n" {
		t.Fatalf("get: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	// A key of another shard is not in shard 2's tablet.
	if r := keelctl("get", "--shard", "2", clean, "s3/key/007"); r.code != exitProblems {
		t.Fatalf("get of shard 3's key in shard 2: exit %d %q", r.code, r.stdout)
	}
	r = keelctl("scan", "--shard", "2", "--json", clean)
	var sc struct {
		Pairs []struct{ Key string }
		More  bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &sc); err != nil || len(sc.Pairs) != multiKeys(2)+1 || sc.More {
		t.Fatalf("scan: %v %q %q", err, r.stdout, r.stderr)
	}
	for _, p := range sc.Pairs {
		if !strings.HasPrefix(p.Key, "s2/") {
			t.Fatalf("scan of shard 2 returned %q", p.Key)
		}
	}
	r = keelctl("hash", "--shard", "2", "--json", clean)
	var h engine.StateHash
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || r.code != 0 ||
		h.AppliedIndex != multiFixture.live[2].applied || h.Keys != uint64(multiKeys(2)+1) {
		t.Fatalf("hash: exit %d %v %q %q", r.code, err, r.stdout, r.stderr)
	}
	r = keelctl("export", "--shard", "2", "--json", clean, out)
	var ex exportReport
	if err := json.Unmarshal([]byte(r.stdout), &ex); err != nil || r.code != 0 || ex.ShardID != 2 || ex.Index != multiFixture.live[2].applied {
		t.Fatalf("export: exit %d %v %q %q", r.code, err, r.stdout, r.stderr)
	}
}
