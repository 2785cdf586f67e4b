package engine

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// procIOWriteBytes is the bytes this process caused to be written to
// storage (/proc/self/io write_bytes), 0 where unavailable.
func procIOWriteBytes() int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// rssBytes is the process's resident set (/proc/self/status VmRSS).
func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// heapBytes is the Go heap in use plus goroutine stacks.
func heapBytes() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse)
}

func openFDs(b *testing.B) int {
	names, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		b.Skipf("no /proc/self/fd: %v", err)
	}
	return len(names)
}

// diskUsage is the allocated bytes (what du reports) and apparent bytes of
// every file under dir.
func diskUsage(b *testing.B, dir string) (allocated, apparent int64) {
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		apparent += info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			allocated += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return allocated, apparent
}

// BenchmarkUpdateSync is one Raft batch (10 puts of 100 bytes and the
// applied index) committed and made durable by Sync, the way Dragonboat
// drives a replica: with Pebble's WAL (a synced WAL record) and without (a
// flush: sstable and MANIFEST fsync), syncing after every batch, every 16,
// and every 1024 (Dragonboat syncs an on-disk state machine only before it
// compacts the log behind a periodic snapshot, every SnapshotEntries
// entries, so the last is the realistic one). disk-bytes/op is what
// reached storage (/proc/self/io), on the machine's real disk.
//
//	go test -run '^$' -bench BenchmarkUpdateSync -benchtime 2000x ./engine/
func BenchmarkUpdateSync(b *testing.B) {
	for _, mode := range []struct {
		name string
		wal  bool
	}{{"wal=on", true}, {"wal=off", false}} {
		for _, every := range []int{1, 16, 1024} {
			b.Run(fmt.Sprintf("%s/sync-every=%d", mode.name, every), func(b *testing.B) {
				// TempDir is on the machine's disk (ext4 here, not tmpfs).
				e, err := OpenRoot(b.TempDir(), Options{Logger: quietLogger(), WAL: mode.wal})
				must(b, err)
				defer e.Close()
				val := make([]byte, 100)
				b.ReportAllocs()
				b.SetBytes(10 * (100 + 12))
				start := procIOWriteBytes()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					bt := e.NewBatch()
					for k := 0; k < 10; k++ {
						must(b, bt.Put([]byte(fmt.Sprintf("key-%08d-%d", i%5000, k)), val))
					}
					must(b, bt.SetAppliedIndex(uint64(i+1)))
					must(b, bt.Commit(false))
					must(b, bt.Close())
					if (i+1)%every == 0 {
						must(b, e.Sync())
					}
				}
				must(b, e.Sync())
				b.StopTimer()
				b.ReportMetric(float64(procIOWriteBytes()-start)/float64(b.N), "disk-bytes/op")
				m := e.Metrics()
				b.ReportMetric(float64(m.Flush.Count)/float64(b.N), "flushes/op")
			})
		}
	}
}

// BenchmarkTablets opens N tablets of 20 small keys each, synced, and
// reports what they hold while open: file descriptors and disk (allocated
// and apparent) per tablet and in total, sstables, goroutines, and the
// growth of the process's resident memory and of the Go heap per tablet
// (resident memory is indicative, and only in the first sub-benchmark a
// process runs: the Go heap and cgo allocations are not returned to the OS
// eagerly, so a later one reuses what an earlier one freed; run one
// sub-benchmark per process to compare), on one Shared and with private
// resources per tablet as Keel ran before tablets (Options.WAL on, 16 MiB
// memtables, a private cache and file cache each). Every tablet records an
// identity as sm.Open does: "shared" and "private+wal" with
// Options.Identity (one flush for format and identity), "shared+setidentity"
// with a SetIdentity after the open, as sm.Open did before (two flushes,
// one sstable more).
//
//	go test -run '^$' -bench BenchmarkTablets -benchtime 1x ./engine/
func BenchmarkTablets(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		for _, mode := range []string{"shared", "shared+setidentity", "private+wal"} {
			b.Run(fmt.Sprintf("n=%d/%s", n, mode), func(b *testing.B) {
				for it := 0; it < b.N; it++ {
					benchTablets(b, n, mode != "private+wal", mode == "shared+setidentity")
				}
			})
		}
	}
}

func benchTablets(b *testing.B, n int, shared, setIdentity bool) {
	dir, err := os.MkdirTemp(b.TempDir(), "tablets-")
	must(b, err)
	defer os.RemoveAll(dir)
	if os.Getenv("KEEL_TABLETS_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 4096 // fine enough to attribute per-tablet structures
	}
	runtime.GC()
	fds0, rss0, g0, heap0 := openFDs(b), rssBytes(), runtime.NumGoroutine(), heapBytes()
	var sh *Shared
	if shared {
		sh, err = NewShared(SharedOptions{})
		must(b, err)
	}
	es := make([]*Engine, n)
	val := make([]byte, 64)
	for i := range es {
		id := Identity{ShardID: uint64(i + 1), ReplicaID: 1}
		o := Options{Logger: quietLogger(), Shared: sh, Identity: &id}
		if setIdentity {
			o.Identity = nil
		}
		if !shared {
			// As Keel ran before tablets: a WAL and 16 MiB memtables.
			o.WAL, o.MemTableSize = true, 16<<20
		}
		e, err := OpenRoot(filepath.Join(dir, fmt.Sprintf("shard-%04d", i)), o)
		must(b, err)
		if setIdentity {
			must(b, e.SetIdentity(id))
		}
		bt := e.NewBatch()
		for k := 0; k < 20; k++ {
			must(b, bt.Put([]byte(fmt.Sprintf("key-%02d", k)), val))
		}
		must(b, bt.SetAppliedIndex(1))
		must(b, bt.Commit(false))
		must(b, bt.Close())
		must(b, e.Sync())
		es[i] = e
	}
	// Read every key once so each tablet's sstables (if any) are opened.
	for _, e := range es {
		for k := 0; k < 20; k++ {
			if _, err := e.Get([]byte(fmt.Sprintf("key-%02d", k))); err != nil {
				b.Fatal(err)
			}
		}
	}
	runtime.GC()
	fds, rss := openFDs(b)-fds0, rssBytes()-rss0
	b.ReportMetric(float64(rss)/float64(n), "rss-bytes/tablet")
	// The Go heap's share of the growth (live objects and goroutine
	// stacks); the rest of rss-bytes is Pebble's manually allocated
	// memory (memtable arenas, cache blocks) and runtime overhead.
	b.ReportMetric(float64(heapBytes()-heap0)/float64(n), "go-bytes/tablet")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/float64(n), "goroutines/tablet")
	if p := os.Getenv("KEEL_TABLETS_HEAP_PROFILE"); p != "" {
		// The heap while the tablets are open, which -memprofile (written
		// after they close) cannot show.
		f, err := os.Create(fmt.Sprintf("%s.%d", p, n))
		must(b, err)
		must(b, pprof.WriteHeapProfile(f))
		must(b, f.Close())
	}
	alloc, apparent := diskUsage(b, dir)
	b.ReportMetric(float64(fds)/float64(n), "fds/tablet")
	b.ReportMetric(float64(fds), "fds")
	b.ReportMetric(float64(alloc)/float64(n), "disk-bytes/tablet")
	b.ReportMetric(float64(apparent)/float64(n), "apparent-bytes/tablet")
	var tables, compactions, flushes int64
	for _, e := range es {
		m := e.Metrics()
		tables += m.Total().TablesCount
		compactions += m.Compact.Count
		flushes += m.Flush.Count
		must(b, e.Close())
	}
	b.ReportMetric(float64(tables)/float64(n), "sstables/tablet")
	b.ReportMetric(float64(compactions)/float64(n), "compactions/tablet")
	b.ReportMetric(float64(flushes)/float64(n), "flushes/tablet")
	if sh != nil {
		must(b, sh.Close())
	}
}

// BenchmarkMemTableSize writes 64 MiB to one tablet without Sync, as a hot
// shard between Dragonboat's syncs, for several MemTableSize caps: the
// throughput and how many flushes (L0 sstables) the cap costs.
//
//	go test -run '^$' -bench BenchmarkMemTableSize -benchtime 1x ./engine/
func BenchmarkMemTableSize(b *testing.B) {
	for _, size := range []uint64{1 << 20, 4 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("memtable=%dMiB", size>>20), func(b *testing.B) {
			const total = 64 << 20
			val := make([]byte, 1000)
			b.SetBytes(total)
			for it := 0; it < b.N; it++ {
				dir := b.TempDir()
				e, err := OpenRoot(dir, Options{Logger: quietLogger(), MemTableSize: size})
				must(b, err)
				for i := 0; i*100*1024 < total; i++ {
					bt := e.NewBatch()
					for k := 0; k < 100; k++ {
						must(b, bt.Put([]byte(fmt.Sprintf("key-%08d", i*100+k)), val))
					}
					must(b, bt.SetAppliedIndex(uint64(i+1)))
					must(b, bt.Commit(false))
					must(b, bt.Close())
				}
				must(b, e.Sync())
				b.ReportMetric(float64(e.Metrics().Flush.Count), "flushes")
				must(b, e.Close())
			}
		})
	}
}
