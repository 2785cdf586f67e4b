package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4"
)

var update = flag.Bool("update", false, "rewrite golden files")

const fixtureKeys = 300

// fixture is a stopped three-replica cluster's directory, built once by
// the first test that needs it, with a testing.TB of its own
// (testutil.Standalone): a failure fails every test that uses it with the
// same error. Every replica applied the same fixtureKeys writes, and a
// snapshot was taken.
var fixture struct {
	once sync.Once
	dir  string
	err  error
	// export is a snapshot-<index> directory host.Export wrote while the
	// cluster ran (after the snapshots, before the last write); members is
	// the cluster's membership.
	export  string
	members map[uint64]string
	// live is what each replica's NodeHost reported of its log just before
	// the cluster stopped: the oracle for inspect.
	live map[int]liveLog
}

type liveLog struct {
	last, snapshot, onDisk uint64
}

func fixtureDir(t *testing.T) string {
	t.Helper()
	fixture.once.Do(func() {
		fixture.err = testutil.Standalone("keelctl fixture", buildFixture)
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return fixture.dir
}

func buildFixture(t testing.TB) {
	dir, err := os.MkdirTemp("", "keelctl-fixture-")
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 3, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader := c.Leader()
	for i := 0; i < fixtureKeys; i++ {
		k, v := fmt.Sprintf("key/%04d", i), fmt.Sprintf("value-%d", i)
		if err := testcluster.Retry(ctx, func(ctx context.Context) error {
			return leader.Client.Put(ctx, []byte(k), []byte(v))
		}); err != nil {
			t.Fatal(err)
		}
	}
	want := leader.Factory.StateMachine(c.ShardID, leader.ReplicaID).AppliedIndex()
	waitApplied(t, c, want)
	// Snapshots are local: take one on every replica.
	for _, n := range c.Running() {
		if err := testcluster.Retry(ctx, func(ctx context.Context) error {
			_, err := n.NH.SyncRequestSnapshot(ctx, c.ShardID, dragonboat.DefaultSnapshotOption)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// An export taken by Keel itself while the cluster runs, for verify and
	// import.
	var export string
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		var err error
		_, export, err = host.Export(ctx, leader.NH, c.ShardID, filepath.Join(dir, "export"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// One more write after the snapshot, so the log is not empty.
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		return leader.Client.Put(ctx, []byte("last"), []byte("write"))
	}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, leader.Factory.StateMachine(c.ShardID, leader.ReplicaID).AppliedIndex())
	live := map[int]liveLog{}
	for _, n := range c.Running() {
		lr, err := n.NH.GetLogReader(c.ShardID)
		if err != nil {
			t.Fatal(err)
		}
		_, last := lr.GetRange()
		ss := lr.Snapshot()
		live[int(n.ReplicaID)] = liveLog{last: last, snapshot: ss.Index, onDisk: ss.OnDiskIndex}
	}
	c.Close()
	for id := range c.Nodes {
		if err := os.CopyFS(filepath.Join(dir, fmt.Sprintf("node-%d", id)), os.DirFS(c.Nodes[id].Dir)); err != nil {
			t.Fatal(err)
		}
	}
	fixture.dir, fixture.export, fixture.members, fixture.live = dir, export, c.Members, live
}

func waitApplied(t testing.TB, c *testcluster.Cluster, want uint64) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, n := range c.Running() {
			if got := n.Factory.StateMachine(c.ShardID, n.ReplicaID).AppliedIndex(); got < want {
				return fmt.Errorf("replica %d applied %d, want %d", n.ReplicaID, got, want)
			}
		}
		return nil
	})
}

// copyNode gives a test its own copy of replica id's directory to damage.
func copyNode(t *testing.T, id int) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "node")
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(fixtureDir(t), fmt.Sprintf("node-%d", id)))); err != nil {
		t.Fatal(err)
	}
	return dst
}

func node(t *testing.T, id int) string {
	return filepath.Join(fixtureDir(t), fmt.Sprintf("node-%d", id))
}

type result struct {
	code           int
	stdout, stderr string
}

func keelctl(args ...string) result {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if fixture.dir != "" {
		_ = os.RemoveAll(fixture.dir)
	}
	if multiFixtureRoot != "" {
		_ = os.RemoveAll(multiFixtureRoot)
	}
	os.Exit(code)
}

func TestInspect(t *testing.T) {
	r := keelctl("inspect", "--json", "--exact", node(t, 1))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bad JSON %q: %v", r.stdout, err)
	}
	if rep.ShardID != 1 || rep.ReplicaID != 1 || !rep.Exact || rep.Keys != fixtureKeys+1 {
		t.Fatalf("report %+v", rep)
	}
	if rep.RaftLog == nil {
		t.Fatalf("no raft log info: %s", rep.RaftLogError)
	}
	// The reader must say what the NodeHost said: Dragonboat's restart
	// view starts the log one above the snapshot and ends at the last entry
	// it saved.
	live := fixture.live[1]
	if got := *rep.RaftLog; got.LastIndex != live.last || got.SnapshotIndex != live.snapshot ||
		got.SnapshotOnDiskIndex != live.onDisk || got.FirstIndex != live.snapshot+1 ||
		got.StoredFirstIndex == 0 || got.StoredFirstIndex > got.FirstIndex {
		t.Fatalf("raft log %+v, NodeHost reported %+v", got, live)
	}
	if live.snapshot == 0 || rep.AppliedIndex != live.last {
		t.Fatalf("NodeHost reported %+v, applied %d: the fixture is not the case under test", live, rep.AppliedIndex)
	}
	if rep.RaftLog.AllocatedBytes <= 0 || len(rep.Leftovers) != 0 || len(rep.Levels) != 7 {
		t.Fatalf("report %+v", rep)
	}
	r = keelctl("inspect", node(t, 2))
	if r.code != 0 || !regexp.MustCompile(`(?m)^replica +2$`).MatchString(r.stdout) ||
		!regexp.MustCompile(fmt.Sprintf(`(?m)^raft log +first %d, last %d `, fixture.live[2].snapshot+1, fixture.live[2].last)).MatchString(r.stdout) {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
}

func TestGetScanHash(t *testing.T) {
	r := keelctl("get", node(t, 1), "key/0042")
	if r.code != 0 || r.stdout != "value-42\n" {
		t.Fatalf("get: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = keelctl("get", node(t, 1), "missing")
	if r.code != exitProblems || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("get missing: exit %d %q", r.code, r.stderr)
	}
	r = keelctl("scan", node(t, 1), "--prefix", "key/001", "--limit", "3")
	golden(t, "scan_prefix.txt", r.stdout)
	r = keelctl("scan", "--json", node(t, 1), "--start", "key/0100", "--end", "key/0103")
	var sc struct {
		Pairs []struct{ Key, Value string }
		More  bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &sc); err != nil || len(sc.Pairs) != 3 || sc.Pairs[2].Key != "key/0102" || sc.More {
		t.Fatalf("scan json: %v %q", err, r.stdout)
	}
	var hashes []string
	for id := 1; id <= 3; id++ {
		r := keelctl("hash", "--json", node(t, id))
		var h engine.StateHash
		if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || r.code != 0 {
			t.Fatalf("hash %d: exit %d %v %q", id, r.code, err, r.stderr)
		}
		hashes = append(hashes, fmt.Sprintf("%d/%s", h.AppliedIndex, h.Hash))
	}
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("replicas differ: %v", hashes)
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestCheckPasses(t *testing.T) {
	for id := 1; id <= 3; id++ {
		r := keelctl("check", node(t, id))
		if r.code != 0 || !strings.Contains(r.stdout, "OK") {
			t.Fatalf("check node %d: exit %d\n%s\n%s", id, r.code, r.stdout, r.stderr)
		}
	}
}

// damageEngine opens a copied replica's image read-write and runs fn on it.
func damageEngine(t *testing.T, dir string, fn func(e *engine.Engine)) {
	t.Helper()
	e, err := engine.OpenRoot(filepath.Join(dir, "sm", "shard-1", "replica-1"), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fn(e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckCatchesDamage(t *testing.T) {
	t.Run("deleted sstable", func(t *testing.T) {
		dir := copyNode(t, 1)
		var img string
		damageEngine(t, dir, func(e *engine.Engine) {
			if err := e.DB().Flush(); err != nil {
				t.Fatal(err)
			}
			img = e.Dir()
		})
		ssts, _ := filepath.Glob(filepath.Join(img, "*.sst"))
		if len(ssts) == 0 {
			t.Fatal("fixture has no sstable after a flush")
		}
		if err := os.Remove(ssts[0]); err != nil {
			t.Fatal(err)
		}
		r := keelctl("check", dir)
		if r.code != exitProblems || !strings.Contains(r.stdout, "PROBLEM") {
			t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		assertOneLineErrors(t, r)
	})
	t.Run("applied index ahead of the log", func(t *testing.T) {
		dir := copyNode(t, 1)
		damageEngine(t, dir, func(e *engine.Engine) {
			applied, _ := e.AppliedIndex()
			b := e.NewBatch()
			defer b.Close()
			if err := b.SetAppliedIndex(applied + 1000); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(true); err != nil {
				t.Fatal(err)
			}
		})
		r := keelctl("check", dir)
		if r.code != exitProblems || !strings.Contains(r.stdout, "ahead of the Raft log") {
			t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("orphaned checkpoint", func(t *testing.T) {
		dir := copyNode(t, 1)
		if err := os.Mkdir(filepath.Join(dir, "sm", "shard-1", "replica-1", "tmp-ckpt-abc"), 0o755); err != nil {
			t.Fatal(err)
		}
		r := keelctl("check", "--json", dir)
		if r.code != exitProblems || !strings.Contains(r.stdout, "tmp-ckpt-abc") {
			t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	})
}

func assertOneLineErrors(t *testing.T, r result) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if line != "" && !strings.HasPrefix(line, "keelctl: ") {
			t.Fatalf("stderr line %q is not a keelctl error line (panic or trace?)\n%s", line, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Fatalf("stack trace on stderr:\n%s", r.stderr)
	}
}

func TestBadInputs(t *testing.T) {
	empty := t.TempDir()
	notKeel := t.TempDir()
	if err := os.WriteFile(filepath.Join(notKeel, "hello.txt"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := t.TempDir()
	rep := filepath.Join(garbage, "sm", "shard-1", "replica-1")
	if err := os.MkdirAll(rep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rep, "CURRENT"), []byte("../../etc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		text string
	}{
		{"no args", []string{"inspect"}, exitUsage, "takes DIR"},
		{"unknown flag", []string{"inspect", "--bogus", empty}, exitUsage, "bogus"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"negative limit", []string{"scan", "--limit", "-1", node(t, 1)}, exitUsage, "limit"},
		{"missing dir", []string{"inspect", filepath.Join(empty, "nope")}, exitUnusable, "no such file"},
		{"empty dir", []string{"inspect", empty}, exitUnusable, "no Keel replica"},
		{"non-Keel dir", []string{"hash", notKeel}, exitUnusable, "no Keel replica"},
		{"corrupt CURRENT", []string{"get", garbage, "k"}, exitUnusable, "CURRENT"},
		{"file as dir", []string{"inspect", filepath.Join(notKeel, "hello.txt")}, exitUnusable, "not a directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := keelctl(tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.text) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", r.code, tc.code, r.stderr, tc.text)
			}
			if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 {
				t.Fatalf("want a one-line error, got:\n%s", r.stderr)
			}
			assertOneLineErrors(t, r)
		})
	}
}

func TestLiveDirRefused(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Leader()
	for _, sub := range []string{"inspect", "check", "hash"} {
		r := keelctl(sub, n.Dir)
		if r.code != exitUnusable || !strings.Contains(r.stderr, "running process") {
			t.Fatalf("%s on a live dir: exit %d %q", sub, r.code, r.stderr)
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	if r := keelctl("export", n.Dir, out); r.code != exitUnusable || !strings.Contains(r.stderr, "running process") {
		t.Fatalf("export on a live dir: exit %d %q", r.code, r.stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused export created %s", out)
	}
}

// TestCheckSnapshotAtLeaderNoOp: a snapshot taken right after an election
// sits at the new leader's empty entry, one above the state machine's
// applied index (that entry never reaches Update). The replica is
// consistent and check must say so.
func TestCheckSnapshotAtLeaderNoOp(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Leader()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		return n.Client.Put(ctx, []byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	c.Stop(n.ReplicaID)
	n = c.Start(n.ReplicaID)
	c.WaitLeader(30 * time.Second)
	var idx uint64
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		var err error
		idx, err = n.NH.SyncRequestSnapshot(ctx, c.ShardID, dragonboat.DefaultSnapshotOption)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	applied := n.Factory.StateMachine(c.ShardID, n.ReplicaID).AppliedIndex()
	c.Stop(n.ReplicaID)
	if idx <= applied {
		t.Fatalf("snapshot index %d not above applied %d: the case under test did not arise", idx, applied)
	}
	if r := keelctl("check", n.Dir); r.code != 0 {
		t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
