package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/gbsnap"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
)

// copyExport gives a test its own copy of the fixture's export directory
// (snapshot-<index>/) under a fresh parent.
func copyExport(t *testing.T) string {
	t.Helper()
	fixtureDir(t)
	dst := filepath.Join(t.TempDir(), "export", filepath.Base(fixture.export))
	if err := os.CopyFS(dst, os.DirFS(fixture.export)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func gbsnapIn(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.gbsnap"))
	if len(m) != 1 {
		t.Fatalf("want one .gbsnap in %s, got %v", dir, m)
	}
	return m[0]
}

// captureStream extracts the raw Keel stream (what SaveSnapshot wrote) from
// an export's .gbsnap.
func captureStream(t *testing.T, gbPath string) string {
	t.Helper()
	f, err := os.Open(gbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	er, err := gbsnap.OpenEnvelope(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := er.ReadSessions(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "stream.keel")
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(o, er.Payload()); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func verifyJSON(t *testing.T, path string) verifyReport {
	t.Helper()
	r := keelctl("verify", "--json", path)
	if r.code != 0 {
		t.Fatalf("verify %s: exit %d: %s", path, r.code, r.stderr)
	}
	var rep verifyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bad JSON %q: %v", r.stdout, err)
	}
	return rep
}

func TestVerifyGoodExport(t *testing.T) {
	exp := copyExport(t)
	rep := verifyJSON(t, exp)
	if rep.Kind != "export" || rep.Metadata == nil || rep.Envelope == nil || !rep.OK {
		t.Fatalf("report %+v", rep)
	}
	s := rep.Stream
	if s.ShardID != 1 || s.SnapshotIndex == 0 || s.SnapshotIndex != s.ImageAppliedIndex || s.SnapshotIndex != rep.Metadata.Index ||
		int(s.FileCount) != len(s.Files) || s.FileCount == 0 || rep.Metadata.Term == 0 || len(rep.Metadata.Members) != 3 {
		t.Fatalf("report %+v / %+v", s, *rep.Metadata)
	}
	var total uint64
	for _, f := range s.Files {
		total += f.Size
	}
	if total != s.TotalBytes || rep.Envelope.Compression != "none" || rep.Envelope.Sessions != 0 {
		t.Fatalf("files add to %d, header %d; envelope %+v", total, s.TotalBytes, *rep.Envelope)
	}
	// The parent directory, the .gbsnap alone and the captured raw stream.
	if p := verifyJSON(t, filepath.Dir(exp)); p.Stream.SnapshotIndex != s.SnapshotIndex {
		t.Fatalf("parent: %+v", p)
	}
	g := verifyJSON(t, gbsnapIn(t, exp))
	if g.Kind != "gbsnap" || g.Metadata != nil || g.Stream.TotalBytes != s.TotalBytes {
		t.Fatalf("gbsnap: %+v", g)
	}
	raw := verifyJSON(t, captureStream(t, gbsnapIn(t, exp)))
	if raw.Kind != "stream" || raw.Envelope != nil || raw.Stream.TotalBytes != s.TotalBytes {
		t.Fatalf("stream: %+v", raw)
	}
	r := keelctl("verify", exp)
	t.Logf("keelctl verify:\n%s", r.stdout)
	if r.code != 0 || !strings.Contains(r.stdout, "snapshot index") || !strings.Contains(r.stdout, "MANIFEST-") || !strings.HasSuffix(r.stdout, "OK\n") {
		t.Fatalf("text: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func truncateHalf(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()/2); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestVerifyCatchesDamage(t *testing.T) {
	cases := []struct {
		name string
		// damage returns the path to verify.
		damage func(t *testing.T) string
		code   int
		text   string
	}{
		{"truncated gbsnap", func(t *testing.T) string {
			e := copyExport(t)
			truncateHalf(t, gbsnapIn(t, e))
			return e
		}, exitProblems, "tail"},
		{"flipped header byte", func(t *testing.T) string {
			e := copyExport(t)
			flipByte(t, gbsnapIn(t, e), 20)
			return e
		}, exitProblems, "header"},
		{"flipped payload byte", func(t *testing.T) string {
			e := copyExport(t)
			p := gbsnapIn(t, e)
			flipByte(t, p, fileSize(t, p)/2)
			return e
		}, exitProblems, "checksum"},
		{"flipped metadata byte", func(t *testing.T) string {
			e := copyExport(t)
			flipByte(t, filepath.Join(e, gbsnap.MetadataFilename), 12)
			return e
		}, exitProblems, "metadata"},
		{"no metadata", func(t *testing.T) string {
			e := copyExport(t)
			if err := os.Remove(filepath.Join(e, gbsnap.MetadataFilename)); err != nil {
				t.Fatal(err)
			}
			return e
		}, exitProblems, "no snapshot.metadata"},
		{"no gbsnap", func(t *testing.T) string {
			e := copyExport(t)
			if err := os.Remove(gbsnapIn(t, e)); err != nil {
				t.Fatal(err)
			}
			return e
		}, exitProblems, "no .gbsnap"},
		{"empty file", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "empty.gbsnap")
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, exitProblems, "too short"},
		{"random file", func(t *testing.T) string {
			b := make([]byte, 64<<10)
			rand.New(rand.NewSource(1)).Read(b)
			p := filepath.Join(t.TempDir(), "random")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, exitProblems, "header length"},
		{"truncated stream", func(t *testing.T) string {
			p := captureStream(t, gbsnapIn(t, copyExport(t)))
			truncateHalf(t, p)
			return p
		}, exitProblems, "stream ends"},
		{"flipped stream byte", func(t *testing.T) string {
			p := captureStream(t, gbsnapIn(t, copyExport(t)))
			flipByte(t, p, fileSize(t, p)/2)
			return p
		}, exitProblems, "corrupt"},
		{"missing path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, exitUnusable, "no such file"},
		{"not a snapshot dir", func(t *testing.T) string { return t.TempDir() }, exitUnusable, "no exported snapshot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := keelctl("verify", tc.damage(t))
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

// TestVerifyAnyFlippedByte flips bytes at random offsets of a .gbsnap: every
// flip is caught (the envelope checksums cover every byte), never a panic.
func TestVerifyAnyFlippedByte(t *testing.T) {
	e := copyExport(t)
	p := gbsnapIn(t, e)
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	for i := 0; i < 40; i++ {
		off := rng.Int63n(int64(len(orig)))
		if i < 8 {
			off = rng.Int63n(64) // the header's protobuf
		}
		b := append([]byte(nil), orig...)
		b[off] ^= byte(1 + rng.Intn(255))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		r := keelctl("verify", e)
		if r.code != exitProblems || strings.Contains(r.stderr, "internal error") {
			t.Fatalf("flip at %d of %d: exit %d %q", off, len(orig), r.code, r.stderr)
		}
		assertOneLineErrors(t, r)
	}
}

func TestImportRefuses(t *testing.T) {
	fixtureDir(t)
	exp := copyExport(t)
	members := host.FormatMembers(fixture.members)
	t.Run("wrong shard", func(t *testing.T) {
		dir := copyNode(t, 1)
		if err := os.Rename(filepath.Join(dir, "sm", "shard-1"), filepath.Join(dir, "sm", "shard-2")); err != nil {
			t.Fatal(err)
		}
		r := keelctl("import", "--snapshot", exp, "--members", members, "--replica-id", "1", dir)
		if r.code != exitUsage || !strings.Contains(r.stderr, "snapshot is of shard 1") {
			t.Fatalf("exit %d %q", r.code, r.stderr)
		}
	})
	t.Run("members miss the replica", func(t *testing.T) {
		r := keelctl("import", "--snapshot", exp, "--members", "2=127.0.0.1:1,3=127.0.0.1:2", "--replica-id", "1", copyNode(t, 1))
		if r.code != exitUsage || !strings.Contains(r.stderr, "does not include replica 1") {
			t.Fatalf("exit %d %q", r.code, r.stderr)
		}
	})
	t.Run("address differs from the snapshot's", func(t *testing.T) {
		m := map[uint64]string{}
		for id, a := range fixture.members {
			m[id] = a
		}
		m[1] = "127.0.0.1:1"
		r := keelctl("import", "--snapshot", exp, "--members", host.FormatMembers(m), "--replica-id", "2", t.TempDir())
		if r.code != exitUsage || !strings.Contains(r.stderr, "replica 1 had address") {
			t.Fatalf("exit %d %q", r.code, r.stderr)
		}
	})
	t.Run("address differs from the NodeHost's", func(t *testing.T) {
		dir := copyNode(t, 1)
		if err := os.RemoveAll(filepath.Join(dir, "sm")); err != nil {
			t.Fatal(err)
		}
		r := keelctl("import", "--snapshot", exp, "--members", "7=127.0.0.1:1", "--replica-id", "7", dir)
		if r.code != exitUsage || !strings.Contains(r.stderr, "was created for Raft address "+fixture.members[1]) {
			t.Fatalf("exit %d %q", r.code, r.stderr)
		}
	})
	t.Run("other replica in dir", func(t *testing.T) {
		r := keelctl("import", "--snapshot", exp, "--members", members, "--replica-id", "2", copyNode(t, 1))
		if r.code != exitUsage || !strings.Contains(r.stderr, "holds replica 1") {
			t.Fatalf("exit %d %q", r.code, r.stderr)
		}
	})
	t.Run("bad snapshot", func(t *testing.T) {
		bad := copyExport(t)
		p := gbsnapIn(t, bad)
		flipByte(t, p, fileSize(t, p)-100)
		dir := copyNode(t, 1)
		before := testutil.Tree(t, dir)
		r := keelctl("import", "--snapshot", bad, "--members", members, "--replica-id", "1", dir)
		if r.code != exitProblems || !strings.Contains(r.stderr, "fails verification") {
			t.Fatalf("exit %d %q", r.code, r.stderr)
		}
		if after := testutil.Tree(t, dir); strings.Join(before, "\n") != strings.Join(after, "\n") {
			t.Fatal("a refused import changed the directory")
		}
	})
	t.Run("live dir", func(t *testing.T) {
		c := testcluster.New(t, 1, testcluster.Options{})
		n := c.Leader()
		r := keelctl("import", "--snapshot", exp, "--members", "1="+n.Addr, "--replica-id", "1", n.Dir)
		if r.code != exitUnusable || !strings.Contains(r.stderr, "running process") {
			t.Fatalf("exit %d %q", r.code, r.stderr)
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, a := range [][]string{
			{"import", copyNode(t, 1)},
			{"import", "--snapshot", exp, "--members", "1=nohost", "--replica-id", "1", t.TempDir()},
			{"import", "--snapshot", gbsnapIn(t, exp), "--members", members, "--replica-id", "1", t.TempDir()},
		} {
			r := keelctl(a...)
			if r.code != exitUsage {
				t.Fatalf("%v: exit %d %q", a, r.code, r.stderr)
			}
			assertOneLineErrors(t, r)
		}
	})
}

func TestImportDryRunChangesNothing(t *testing.T) {
	fixtureDir(t)
	exp := copyExport(t)
	dir := copyNode(t, 1)
	before := testutil.Tree(t, dir)
	r := keelctl("import", "--dry-run", "--snapshot", filepath.Dir(exp), "--members", host.FormatMembers(fixture.members), "--replica-id", "1", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "dry run: nothing written") || !strings.Contains(r.stdout, filepath.Join(dir, "raft")) {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("keelctl import --dry-run:\n%s", r.stdout)
	if after := testutil.Tree(t, dir); strings.Join(before, "\n") != strings.Join(after, "\n") {
		t.Fatalf("dry run changed %s:\nbefore:\n%s\nafter:\n%s", dir, strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	fresh := filepath.Join(t.TempDir(), "fresh")
	r = keelctl("import", "--dry-run", "--json", "--snapshot", exp, "--members", host.FormatMembers(fixture.members), "--replica-id", "2", fresh)
	var plan importPlan
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil || r.code != 0 || !plan.DryRun || plan.Done || plan.ShardID != 1 || plan.ReplicaID != 2 {
		t.Fatalf("exit %d %v %q %q", r.code, err, r.stdout, r.stderr)
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Fatalf("dry run created %s: %v", fresh, err)
	}
	// The real thing on the same directory succeeds and does change it.
	r = keelctl("import", "--snapshot", exp, "--members", host.FormatMembers(fixture.members), "--replica-id", "1", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "imported") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if after := testutil.Tree(t, dir); strings.Join(before, "\n") == strings.Join(after, "\n") {
		t.Fatal("import changed nothing")
	}
}

// TestExportImportRoundTrip exports a stopped replica with keelctl, imports
// it with keelctl into fresh directories for three new replicas (the old
// ones are gone for good), starts them and checks the data and new writes.
func TestExportImportRoundTrip(t *testing.T) {
	src := copyNode(t, 2)
	out := filepath.Join(t.TempDir(), "out")
	r := keelctl("export", "--json", src, out)
	if r.code != 0 {
		t.Fatalf("export: exit %d %s", r.code, r.stderr)
	}
	var exp exportReport
	if err := json.Unmarshal([]byte(r.stdout), &exp); err != nil {
		t.Fatal(err)
	}
	h := keelctl("hash", "--json", src)
	var srcHash struct {
		AppliedIndex uint64 `json:"AppliedIndex"`
		Keys         uint64 `json:"Keys"`
	}
	_ = json.Unmarshal([]byte(h.stdout), &srcHash)
	if exp.ShardID != 1 || exp.ReplicaID != 2 || exp.Term == 0 || host.FormatMembers(exp.Members) != host.FormatMembers(fixture.members) {
		t.Fatalf("export report %+v, fixture members %v", exp, fixture.members)
	}
	v := verifyJSON(t, out)
	if v.Stream.SnapshotIndex != exp.Index || v.Metadata.Term != exp.Term {
		t.Fatalf("verify %+v vs export %+v", v, exp)
	}
	if r := keelctl("export", src, out); r.code != exitUsage || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second export: exit %d %q", r.code, r.stderr)
	}
	if r := keelctl("export", "--compression", "snappy", src, filepath.Join(t.TempDir(), "snappy")); r.code != 0 {
		t.Fatalf("Snappy export: exit %d %q", r.code, r.stderr)
	} else if v := verifyJSON(t, strings.TrimSpace(strings.Fields(strings.Split(r.stdout, "\n")[0])[1])); v.Envelope.Compression != "snappy" || v.Stream.TotalBytes != exp.Bytes {
		t.Fatalf("Snappy export: %+v", v)
	}
	if r := keelctl("check", src); r.code != 0 {
		t.Fatalf("export changed the source: %s %s", r.stdout, r.stderr)
	}

	// Replicas 4, 5, 6 on new addresses replace 1, 2, 3.
	addrs := testcluster.FreeAddrs(t, 3)
	members := map[uint64]string{4: addrs[0], 5: addrs[1], 6: addrs[2]}
	base := t.TempDir()
	for id := range members {
		dir := filepath.Join(base, fmt.Sprintf("node-%d", id))
		r := keelctl("import", "--snapshot", out, "--members", host.FormatMembers(members), "--replica-id", fmt.Sprint(id), dir)
		if r.code != 0 || !strings.Contains(r.stdout, "[1 2 3] (never restart them)") {
			t.Fatalf("import %d: exit %d\n%s\n%s", id, r.code, r.stdout, r.stderr)
		}
	}
	var clients []*client.Client
	for id := range members {
		dir := filepath.Join(base, fmt.Sprintf("node-%d", id))
		nh, err := dragonboat.NewNodeHost(config.NodeHostConfig{
			NodeHostDir:    filepath.Join(dir, "raft"),
			RTTMillisecond: 5,
			RaftAddress:    members[id],
			// A fresh DIR is imported for --cluster-id's default.
			DeploymentID: host.DeploymentID("keel"),
			Expert:       config.ExpertConfig{LogDB: host.LogDBConfig()},
		})
		if err != nil {
			t.Fatalf("replica %d: NodeHost: %v", id, err)
		}
		t.Cleanup(nh.Close)
		f, err := host.NewFactory(host.Config{RootDir: filepath.Join(dir, "sm")})
		if err != nil {
			t.Fatal(err)
		}
		// Imported replicas start as after a reboot: no initial members.
		if err := nh.StartOnDiskReplica(nil, false, f.Create, host.ShardConfig(1, id)); err != nil {
			t.Fatalf("replica %d: start: %v", id, err)
		}
		clients = append(clients, client.NewClient(nh, 1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := clients[0]
	var res client.ScanResult
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		var err error
		res, err = c.Scan(ctx, client.ScanQuery{Prefix: []byte("key/"), Limit: 1000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(res.Pairs) != fixtureKeys {
		t.Fatalf("%d keys after import, want %d", len(res.Pairs), fixtureKeys)
	}
	for i, kv := range res.Pairs {
		if want := fmt.Sprintf("value-%d", i); string(kv.Value) != want || string(kv.Key) != fmt.Sprintf("key/%04d", i) {
			t.Fatalf("%s = %s, want key/%04d = %s", kv.Key, kv.Value, i, want)
		}
	}
	if v, ok, err := c.Get(ctx, []byte("last")); err != nil || !ok || string(v) != "write" {
		t.Fatalf("last = %q %v %v", v, ok, err)
	}
	for i := 0; i < 50; i++ {
		k := fmt.Sprintf("new/%03d", i)
		if err := testcluster.Retry(ctx, func(ctx context.Context) error { return c.Put(ctx, []byte(k), []byte("x")) }); err != nil {
			t.Fatal(err)
		}
	}
	// Every replica converges on the same state holding old and new keys.
	testutil.Eventually(t, 60*time.Second, func() error {
		var hs []string
		for _, cl := range clients {
			h, err := cl.LocalHash()
			if err != nil {
				hs = append(hs, err.Error())
				continue
			}
			hs = append(hs, fmt.Sprintf("%d/%d/%s", h.AppliedIndex, h.Keys, h.Hash))
		}
		if hs[0] == hs[1] && hs[1] == hs[2] && strings.Contains(hs[0], fmt.Sprintf("/%d/", fixtureKeys+1+50)) {
			return nil
		}
		return fmt.Errorf("replicas did not converge: %v (source hash %+v)", hs, srcHash)
	})
}

func TestHelpGolden(t *testing.T) {
	for _, sub := range []string{"verify", "export", "import"} {
		r := keelctl(sub, "--help")
		if r.code != 0 {
			t.Fatalf("%s --help: exit %d %s", sub, r.code, r.stderr)
		}
		golden(t, "help_"+sub+".txt", r.stdout)
	}
}

// TestVerifyExportBeforeAnyWrite: an export taken before anything was
// written has a Dragonboat index (membership entry, the leader's empty
// entry) above the state machine's applied index 0; it is valid.
func TestVerifyExportBeforeAnyWrite(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Leader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var idx uint64
	var path string
	if err := testcluster.Retry(ctx, func(ctx context.Context) error {
		var err error
		idx, path, err = host.Export(ctx, n.NH, c.ShardID, t.TempDir())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if idx == 0 || n.Factory.StateMachine(c.ShardID, n.ReplicaID).AppliedIndex() >= idx {
		t.Fatalf("want an export above the applied index; index %d", idx)
	}
	if r := keelctl("verify", path); r.code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
