package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestNamespaces writes user keys whose bytes imitate Keel's metadata keys
// and namespace tags: none may touch the applied index, identity or format,
// and no scan may return metadata.
func TestNamespaces(t *testing.T) {
	e := openTemp(t)
	must(t, e.SetIdentity(Identity{ShardID: 1, ReplicaID: 2}))
	write(t, e, 5)
	tricky := [][]byte{
		keyApplied, keyIdentity, keyFormat,
		append([]byte{nsUser}, keyApplied...),
		{0x00}, {0x01}, {0x02}, {0xff}, {0xff, 0xff, 0xff},
		[]byte("mapplied"), []byte("\x01\x01"),
	}
	b := e.NewBatch()
	for _, k := range tricky {
		must(t, b.Put(k, []byte("user")))
	}
	must(t, b.Commit(false))
	must(t, b.Close())

	if n, err := e.AppliedIndex(); err != nil || n != 5 {
		t.Fatalf("applied index %d %v after writing look-alike user keys", n, err)
	}
	if id, ok, err := e.Identity(); err != nil || !ok || id != (Identity{1, 2}) {
		t.Fatalf("identity %v %v %v", id, ok, err)
	}
	v, err := e.NewView()
	must(t, err)
	got := scanAll(t, v, nil, nil, 0)
	must(t, v.Close())
	if len(got) != len(tricky) {
		t.Fatalf("scan returned %d keys, want %d: %q", len(got), len(tricky), got)
	}
	for _, kv := range got {
		if !strings.HasSuffix(kv, "=user") {
			t.Fatalf("scan returned metadata: %q", kv)
		}
	}
	for _, k := range tricky {
		if val, err := e.Get(k); err != nil || string(val) != "user" {
			t.Fatalf("get %q: %q %v", k, val, err)
		}
	}

	// Deleting all user data (even from the smallest key) leaves metadata.
	b = e.NewBatch()
	must(t, b.DeleteRange([]byte{0x00}, nil))
	must(t, b.SetAppliedIndex(6))
	must(t, b.Commit(true))
	must(t, b.Close())
	must(t, e.Close())
	e2, err := Open(e.Dir(), Options{Logger: quietLogger()})
	must(t, err)
	defer e2.Close()
	if n, err := e2.AppliedIndex(); err != nil || n != 6 {
		t.Fatalf("applied %d %v after range-deleting all user keys", n, err)
	}
	if _, ok, err := e2.Identity(); err != nil || !ok {
		t.Fatalf("identity lost: %v %v", ok, err)
	}
	s, err := e2.Stats(true)
	must(t, err)
	if s.Keys != 0 {
		t.Fatalf("%d user keys left after deleting everything", s.Keys)
	}
}

func TestViewIsConsistent(t *testing.T) {
	e := openTemp(t)
	write(t, e, 1, "a", "1", "b", "1")
	v, err := e.NewView()
	must(t, err)
	defer v.Close()

	write(t, e, 2, "a", "2", "c", "2")
	b := e.NewBatch()
	must(t, b.Delete([]byte("b")))
	must(t, b.SetAppliedIndex(3))
	must(t, b.Commit(false))
	must(t, b.Close())
	must(t, e.DB().Flush()) // the view must survive its memtable being flushed

	if n, _ := v.AppliedIndex(); n != 1 {
		t.Fatalf("view applied %d, want 1", n)
	}
	if got := strings.Join(scanAll(t, v, nil, nil, 0), " "); got != "a=1 b=1" {
		t.Fatalf("view sees %q", got)
	}
	if val, err := v.Get([]byte("b")); err != nil || string(val) != "1" {
		t.Fatalf("view get b: %q %v", val, err)
	}
	if _, err := v.Get([]byte("c")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("view sees a later key: %v", err)
	}
	v2, err := e.NewView()
	must(t, err)
	defer v2.Close()
	if n, _ := v2.AppliedIndex(); n != 3 {
		t.Fatalf("new view applied %d", n)
	}
	if got := strings.Join(scanAll(t, v2, nil, nil, 0), " "); got != "a=2 c=2" {
		t.Fatalf("new view sees %q", got)
	}
}

func TestBatchReadsOwnWrites(t *testing.T) {
	e := openTemp(t)
	write(t, e, 1, "a", "1", "b", "1", "c", "1")
	b := e.NewBatch()
	defer b.Close()
	must(t, b.Put([]byte("a"), []byte("2")))
	must(t, b.DeleteRange([]byte("b"), []byte("c")))
	if v, err := b.Get([]byte("a")); err != nil || string(v) != "2" {
		t.Fatalf("batch get a: %q %v", v, err)
	}
	if _, err := b.Get([]byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("batch sees a range-deleted key: %v", err)
	}
	if v, err := b.Get([]byte("c")); err != nil || string(v) != "1" {
		t.Fatalf("range end is exclusive: %q %v", v, err)
	}
	if err := b.DeleteRange([]byte("b"), []byte("b")); !errors.Is(err, ErrInvalidRange) {
		t.Fatalf("empty range: %v", err)
	}
	if err := b.DeleteRange([]byte("c"), []byte("b")); !errors.Is(err, ErrInvalidRange) {
		t.Fatalf("reversed range: %v", err)
	}
	if b.Len() == 0 {
		t.Fatalf("batch reports no content")
	}
	// Nothing is visible outside the batch until it commits.
	if v, _ := e.Get([]byte("a")); string(v) != "1" {
		t.Fatalf("uncommitted write visible: %q", v)
	}
}

func TestScanBoundsAndLimit(t *testing.T) {
	e := openTemp(t)
	var kv []string
	for i := 0; i < 20; i++ {
		kv = append(kv, fmt.Sprintf("k%02d", i), fmt.Sprint(i))
	}
	kv = append(kv, "\x00low", "x", "\xffhigh", "y")
	write(t, e, 1, kv...)
	v, err := e.NewView()
	must(t, err)
	defer v.Close()
	cases := []struct {
		start, end string
		nilEnd     bool
		limit      int
		want       string
	}{
		{"k05", "k08", false, 0, "k05=5 k06=6 k07=7"},
		{"k05", "k08", false, 2, "k05=5 k06=6"},
		{"k18", "", true, 0, "k18=18 k19=19 \xffhigh=y"},
		{"", "k01", false, 0, "\x00low=x k00=0"},
		{"k05", "k05", false, 0, ""},
		{"k09", "k05", false, 0, ""},
		{"k050", "k06", false, 0, ""},
		{"\xffhigh", "", true, 1, "\xffhigh=y"},
	}
	for _, c := range cases {
		var end []byte
		if !c.nilEnd {
			end = []byte(c.end)
		}
		got := strings.Join(scanAll(t, v, []byte(c.start), end, c.limit), " ")
		if got != c.want {
			t.Fatalf("scan [%q, %q) limit %d = %q, want %q", c.start, c.end, c.limit, got, c.want)
		}
	}
	if n := len(scanAll(t, v, nil, nil, 0)); n != 22 {
		t.Fatalf("full scan %d keys", n)
	}
	// fn returning false stops the scan.
	n := 0
	must(t, v.Scan(nil, nil, 0, func(k, val []byte) bool { n++; return n < 3 }))
	if n != 3 {
		t.Fatalf("scan kept going after fn returned false: %d", n)
	}
}

func TestStats(t *testing.T) {
	e := openTemp(t)
	var kv []string
	bytes := 0
	for i := 0; i < 1000; i++ {
		k, v := fmt.Sprintf("key-%04d", i), strings.Repeat("v", i%50)
		kv = append(kv, k, v)
		bytes += len(k) + len(v)
	}
	write(t, e, 7, kv...)
	exact, err := e.Stats(true)
	must(t, err)
	if !exact.Exact || exact.Keys != 1000 || exact.Bytes != uint64(bytes) || exact.AppliedIndex != 7 {
		t.Fatalf("exact stats %+v, want 1000 keys %d bytes at 7", exact, bytes)
	}
	// A small image is always counted exactly, even when asked to estimate.
	small, err := e.Stats(false)
	must(t, err)
	if small != exact {
		t.Fatalf("small-image estimate %+v differs from exact %+v", small, exact)
	}

	// Past the exact threshold the estimate comes from sstables: it must be
	// in the right range, not exact.
	big := openTemp(t)
	// Incompressible values, so the on-disk size is the logical size.
	rng := rand.New(rand.NewPCG(1, 2))
	val := make([]byte, 4096)
	const n = 4000 // ~16 MiB, over exactBelow
	for i := 0; i < n; i += 500 {
		b := big.NewBatch()
		for j := i; j < i+500; j++ {
			for w := range val {
				val[w] = byte(rng.Uint32())
			}
			must(t, b.Put([]byte(fmt.Sprintf("big-%06d", j)), val))
		}
		must(t, b.SetAppliedIndex(uint64(i+500)))
		must(t, b.Commit(false))
		must(t, b.Close())
	}
	must(t, big.DB().Flush())
	est, err := big.Stats(false)
	must(t, err)
	if est.Exact {
		t.Fatalf("a %d-key image was counted exactly: %+v", n, est)
	}
	if est.Keys < n/2 || est.Keys > 2*n || est.AppliedIndex != n {
		t.Fatalf("estimate %+v is far from %d keys", est, n)
	}
	if est.Bytes < n*4096/4 || est.Bytes > n*4096*2 {
		t.Fatalf("estimated %d bytes for ~%d", est.Bytes, n*4096)
	}
	ex, err := big.Stats(true)
	must(t, err)
	if !ex.Exact || ex.Keys != n {
		t.Fatalf("exact count of the big image: %+v", ex)
	}
}

func TestHash(t *testing.T) {
	hashOf := func(e *Engine) StateHash {
		v, err := e.NewView()
		must(t, err)
		defer v.Close()
		var reported uint64
		h, err := v.Hash(func(b uint64) { reported = b })
		must(t, err)
		s, err := e.Stats(true)
		must(t, err)
		if reported != s.Bytes || h.Keys != s.Keys {
			t.Fatalf("hash progress %d bytes / %d keys, stats %+v", reported, h.Keys, s)
		}
		return h
	}
	a, b := openTemp(t), openTemp(t)
	if ha, hb := hashOf(a), hashOf(b); ha != hb || ha.Keys != 0 {
		t.Fatalf("empty images hash differently: %+v %+v", ha, hb)
	}
	// Same content reached by different histories hashes the same.
	write(t, a, 3, "k1", "v1", "k2", "v2")
	write(t, b, 1, "k2", "old", "zz", "gone")
	write(t, b, 2, "k1", "v1", "k2", "v2")
	bb := b.NewBatch()
	must(t, bb.Delete([]byte("zz")))
	must(t, bb.SetAppliedIndex(3))
	must(t, bb.Commit(false))
	must(t, bb.Close())
	must(t, b.DB().Flush())
	ha, hb := hashOf(a), hashOf(b)
	if ha != hb {
		t.Fatalf("equal content, different hashes:\n%+v\n%+v", ha, hb)
	}
	// Any difference shows: a value, a key, the framing between them.
	variants := []func(e *Engine){
		func(e *Engine) { write(t, e, 3, "k1", "v1x") },
		func(e *Engine) { write(t, e, 3, "k3", "") },
		func(e *Engine) { write(t, e, 3, "k1", "", "k1v1", "") },
	}
	seen := map[string]bool{ha.Hash: true}
	for i, f := range variants {
		e := openTemp(t)
		write(t, e, 3, "k1", "v1", "k2", "v2")
		f(e)
		h := hashOf(e)
		if seen[h.Hash] {
			t.Fatalf("variant %d hashes like an earlier state", i)
		}
		seen[h.Hash] = true
	}
	// The applied index is reported with the hash.
	write(t, a, 4)
	if h := hashOf(a); h.AppliedIndex != 4 || h.Hash != ha.Hash {
		t.Fatalf("after an empty batch at 4: %+v", h)
	}
}

func TestClosedEngine(t *testing.T) {
	e := openTemp(t)
	write(t, e, 1, "a", "1")
	b := e.NewBatch()
	must(t, b.Put([]byte("b"), nil))
	must(t, e.Close())
	must(t, e.Close())
	if err := b.Commit(false); !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after close: %v", err)
	}
	if _, err := e.Get([]byte("a")); !errors.Is(err, ErrClosed) {
		t.Fatalf("get: %v", err)
	}
	if _, err := e.AppliedIndex(); !errors.Is(err, ErrClosed) {
		t.Fatalf("applied: %v", err)
	}
	if _, _, err := e.Identity(); !errors.Is(err, ErrClosed) {
		t.Fatalf("identity: %v", err)
	}
	if err := e.SetIdentity(Identity{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("set identity: %v", err)
	}
	if err := e.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("sync: %v", err)
	}
	if _, err := e.NewView(); !errors.Is(err, ErrClosed) {
		t.Fatalf("view: %v", err)
	}
	if _, err := e.Stats(true); !errors.Is(err, ErrClosed) {
		t.Fatalf("stats: %v", err)
	}
	if err := e.Checkpoint(t.TempDir() + "/cp"); !errors.Is(err, ErrClosed) {
		t.Fatalf("checkpoint: %v", err)
	}
}

func TestCheckpointOpensAsImage(t *testing.T) {
	e := openTemp(t)
	must(t, e.SetIdentity(Identity{1, 1}))
	write(t, e, 9, "a", "1")
	r := NewRoot(e.Dir()+"/..", nil)
	dest := r.TempPath("checkpoint")
	must(t, e.Checkpoint(dest))
	write(t, e, 10, "a", "2")
	if err := e.Checkpoint(dest); err == nil {
		t.Fatalf("checkpoint into an existing directory succeeded")
	}
	c, err := Open(dest, Options{Logger: quietLogger()})
	must(t, err)
	defer c.Close()
	if n, _ := c.AppliedIndex(); n != 9 {
		t.Fatalf("checkpoint applied %d", n)
	}
	if v, _ := c.Get([]byte("a")); string(v) != "1" {
		t.Fatalf("checkpoint a=%q", v)
	}
}
