package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// countingFS counts the calls that reach the disk's journal on the way to
// a tablet: fsyncs (Sync, SyncData, SyncTo on files and directories),
// creates, renames, removes and directory opens, by the kind of file.
type countingFS struct {
	vfs.FS
	mu     sync.Mutex
	counts map[string]int
}

func newCountingFS(fs vfs.FS) *countingFS {
	return &countingFS{FS: fs, counts: make(map[string]int)}
}

func fileKind(name string) string {
	base := filepath.Base(name)
	switch {
	case strings.HasPrefix(base, "MANIFEST"):
		return "MANIFEST"
	case strings.HasPrefix(base, "OPTIONS"):
		return "OPTIONS"
	case strings.HasPrefix(base, "marker."):
		return "marker"
	case strings.HasSuffix(base, ".log"):
		return "log"
	case strings.HasSuffix(base, ".sst"):
		return "sst"
	case strings.HasSuffix(base, ".dbtmp"):
		return "tmp"
	case strings.HasPrefix(base, "CURRENT"):
		return "CURRENT"
	case name == "dir":
		return "dir"
	}
	return "other"
}

func (c *countingFS) add(op, name string) {
	c.mu.Lock()
	c.counts[op+" "+fileKind(name)]++
	c.mu.Unlock()
}

func (c *countingFS) reset() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = make(map[string]int)
	return out
}

func (c *countingFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	c.add("create", name)
	f, err := c.FS.Create(name, cat)
	if err != nil {
		return f, err
	}
	return &countingFile{File: f, c: c, name: name}, nil
}

func (c *countingFS) ReuseForWrite(o, n string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	c.add("reuse", n)
	f, err := c.FS.ReuseForWrite(o, n, cat)
	if err != nil {
		return f, err
	}
	return &countingFile{File: f, c: c, name: n}, nil
}

func (c *countingFS) OpenReadWrite(name string, cat vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	f, err := c.FS.OpenReadWrite(name, cat, o...)
	if err != nil {
		return f, err
	}
	return &countingFile{File: f, c: c, name: name}, nil
}

func (c *countingFS) OpenDir(name string) (vfs.File, error) {
	c.add("opendir", "dir")
	f, err := c.FS.OpenDir(name)
	if err != nil {
		return f, err
	}
	return &countingFile{File: f, c: c, name: "dir"}, nil
}

func (c *countingFS) Rename(o, n string) error {
	c.add("rename", n)
	return c.FS.Rename(o, n)
}

func (c *countingFS) Remove(name string) error {
	c.add("remove", name)
	return c.FS.Remove(name)
}

func (c *countingFS) Unwrap() vfs.FS { return c.FS }

type countingFile struct {
	vfs.File
	c    *countingFS
	name string
}

// noSync (KEEL_REOPEN_NOSYNC=1) turns every counted fsync into a no-op,
// to see what a reopen costs without them. Measurement only.
var noSync = os.Getenv("KEEL_REOPEN_NOSYNC") != ""

func (f *countingFile) Sync() error {
	f.c.add("fsync", f.name)
	if noSync {
		return nil
	}
	return f.File.Sync()
}

func (f *countingFile) SyncData() error {
	f.c.add("fsync", f.name)
	if noSync {
		return nil
	}
	return f.File.SyncData()
}

func (f *countingFile) SyncTo(n int64) (bool, error) {
	f.c.add("fsync", f.name)
	if noSync {
		return true, nil
	}
	return f.File.SyncTo(n)
}

func formatCounts(m map[string]int, n int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	total := 0
	for _, k := range keys {
		if strings.HasPrefix(k, "fsync ") {
			total += m[k]
		}
		fmt.Fprintf(&sb, " %s=%.2f", k, float64(m[k])/float64(n))
	}
	return fmt.Sprintf("fsyncs/tablet=%.2f:%s", float64(total)/float64(n), sb.String())
}

// BenchmarkReopen is what a restart of a host costs per tablet: n tablets
// with 20 small keys each are created, synced and closed; then every one
// is opened again (OpenRoot with an identity, then AppliedIndex, as
// sm.Open does; read-only in the "ro" runs, as sm opens an idle tablet
// for a Lookup) from 48 goroutines, as Dragonboat's 48 snapshot workers
// call Open, and closed again. It reports the wall time per tablet of the
// reopen, the Go heap an open tablet holds, and the file operations of
// the reopen per tablet (logged, with -v).
//
//	go test -run '^$' -bench BenchmarkReopen -benchtime 1x -v ./engine/
func BenchmarkReopen(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, ro := range []bool{false, true} {
			b.Run(fmt.Sprintf("n=%d/ro=%v", n, ro), func(b *testing.B) {
				for it := 0; it < b.N; it++ {
					benchReopen(b, n, 48, ro)
				}
			})
		}
	}
}

func benchReopen(b *testing.B, n, workers int, ro bool) {
	dir, err := os.MkdirTemp(b.TempDir(), "reopen-")
	must(b, err)
	defer os.RemoveAll(dir)
	cfs := newCountingFS(vfs.Default)
	sh, err := NewShared(SharedOptions{})
	must(b, err)
	defer sh.Close()
	root := func(i int) string { return filepath.Join(dir, fmt.Sprintf("shard-%04d", i)) }
	opts := func(i int) Options {
		id := Identity{ShardID: uint64(i + 1), ReplicaID: 1}
		return Options{Logger: quietLogger(), Shared: sh, Identity: &id, FS: cfs}
	}
	val := make([]byte, 64)
	parallel := func(f func(i int)) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					f(i)
				}
			}()
		}
		wg.Wait()
	}
	es := make([]*Engine, n)
	t0 := time.Now()
	parallel(func(i int) {
		e, err := OpenRoot(root(i), opts(i))
		must(b, err)
		bt := e.NewBatch()
		for k := 0; k < 20; k++ {
			must(b, bt.Put([]byte(fmt.Sprintf("key-%02d", k)), val))
		}
		must(b, bt.SetAppliedIndex(1))
		must(b, bt.Commit(false))
		must(b, bt.Close())
		must(b, e.Sync())
		es[i] = e
	})
	create := time.Since(t0)
	createCounts := cfs.reset()
	parallel(func(i int) { must(b, es[i].Close()); es[i] = nil })
	closeCounts := cfs.reset()

	runtime.GC()
	heap0 := heapBytes()
	t0 = time.Now()
	parallel(func(i int) {
		o := opts(i)
		o.ReadOnly = ro
		e, err := OpenRoot(root(i), o)
		must(b, err)
		if idx, err := e.AppliedIndex(); err != nil || idx != 1 {
			b.Fatalf("applied index %d, %v", idx, err)
		}
		es[i] = e
	})
	reopen := time.Since(t0)
	reopenCounts := cfs.reset()
	runtime.GC()
	b.ReportMetric(float64(heapBytes()-heap0)/float64(n), "go-bytes/tablet")
	b.ReportMetric(float64(reopen.Nanoseconds())/float64(n), "reopen-ns/tablet")
	b.ReportMetric(float64(create.Nanoseconds())/float64(n), "create-ns/tablet")
	parallel(func(i int) { must(b, es[i].Close()) })
	b.Logf("create: %s", formatCounts(createCounts, n))
	b.Logf("close: %s", formatCounts(closeCounts, n))
	b.Logf("reopen: %s", formatCounts(reopenCounts, n))
}
