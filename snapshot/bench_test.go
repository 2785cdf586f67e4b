package snapshot_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/sm"
)

// benchSizes are state sizes; 1 GB only with KEEL_BENCH_LARGE=1 (make bench).
func benchSizes() []int {
	s := []int{10 << 20, 100 << 20}
	if os.Getenv("KEEL_BENCH_LARGE") == "1" {
		s = append(s, 1<<30)
	}
	return s
}

const benchValue = 1000

// benchReplica builds a replica holding about size bytes of user data
// (1000-byte values, ~16-byte keys) with random-looking values so Pebble's
// compression does not shrink them away.
func benchReplica(b *testing.B, size int) *replica {
	b.Helper()
	r := newReplica(b, 1, 1)
	n := size / (benchValue + 16)
	val := make([]byte, benchValue)
	var x uint64 = 88172645463325252
	var batch []sm.Command
	for i := 0; i < n; i++ {
		for j := 0; j+8 <= len(val); j += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(val[j:], x)
		}
		batch = append(batch, sm.Command{Op: sm.OpPut, Key: []byte(fmt.Sprintf("key%012d", i)), Value: append([]byte(nil), val...)})
		if len(batch) == 512 {
			r.apply(batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		r.apply(batch...)
	}
	return r
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkPrepareStall measures how long PrepareSnapshot holds Update off
// (the whole stall Keel's design imposes), and, for comparison, how long an
// exact checkpoint inside Prepare (the alternative design) would hold it.
func BenchmarkPrepareStall(b *testing.B) {
	for _, size := range benchSizes() {
		b.Run(fmt.Sprintf("state=%dMB", size>>20), func(b *testing.B) {
			r := benchReplica(b, size)
			e := benchEngine(b, size)
			var stalls, checkpoints []time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// Some fresh writes, so the memtable and WAL are not empty.
				b.StopTimer()
				r.apply(put(fmt.Sprintf("fresh%09d", i), "x"))
				b.StartTimer()
				start := time.Now()
				ctx, err := r.sm.PrepareSnapshot()
				stalls = append(stalls, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := r.sm.SaveSnapshot(ctx, io.Discard, nil); err != nil {
					b.Fatal(err)
				}
				dir := filepath.Join(b.TempDir(), "ck")
				start = time.Now()
				if err := checkpoint(e, dir); err != nil {
					b.Fatal(err)
				}
				checkpoints = append(checkpoints, time.Since(start))
				_ = os.RemoveAll(dir)
				b.StartTimer()
			}
			b.ReportMetric(float64(percentile(stalls, 0.5).Microseconds()), "stall-p50-µs")
			b.ReportMetric(float64(percentile(stalls, 0.99).Microseconds()), "stall-p99-µs")
			b.ReportMetric(float64(percentile(stalls, 1).Microseconds()), "stall-max-µs")
			b.ReportMetric(float64(percentile(checkpoints, 0.5).Microseconds()), "exact-ckpt-p50-µs")
			b.ReportMetric(float64(percentile(checkpoints, 1).Microseconds()), "exact-ckpt-max-µs")
		})
	}
}

// checkpoint times what PrepareSnapshot would stall for if it took an
// exact checkpoint itself (the alternative design): a flushed-WAL Pebble
// checkpoint of an engine holding the same data as r.
func checkpoint(e *engine.Engine, dir string) error { return e.Checkpoint(dir) }

// benchEngine fills a bare engine like benchReplica fills a replica.
func benchEngine(b *testing.B, size int) *engine.Engine {
	b.Helper()
	e, err := engine.OpenRoot(b.TempDir(), engine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	val := make([]byte, benchValue)
	var x uint64 = 88172645463325252
	bt := e.NewBatch()
	for i := 0; i < size/(benchValue+16); i++ {
		for j := 0; j+8 <= len(val); j += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(val[j:], x)
		}
		_ = bt.Put([]byte(fmt.Sprintf("key%012d", i)), val)
		if bt.Len() > 4<<20 {
			if err := bt.Commit(false); err != nil {
				b.Fatal(err)
			}
			_ = bt.Close()
			bt = e.NewBatch()
		}
	}
	_ = bt.Commit(false)
	_ = bt.Close()
	return e
}

// BenchmarkStreamInstall measures Save (capture + stream) and
// RecoverFromSnapshot (verify + install) end to end through a pipe, against
// a baseline that iterates every key into a stream and re-inserts each on
// the receiver (Dragonboat's on-disk example pattern), and against the
// disk's sequential write bandwidth measured in the same run.
func BenchmarkStreamInstall(b *testing.B) {
	for _, size := range benchSizes() {
		r := benchReplica(b, size)
		st, err := r.sm.Lookup(sm.StatsQuery{Exact: true})
		if err != nil {
			b.Fatal(err)
		}
		userBytes := int64(st.(engine.Stats).Bytes)
		b.Run(fmt.Sprintf("keel/state=%dMB", size>>20), func(b *testing.B) {
			b.SetBytes(userBytes)
			b.ReportAllocs()
			var streamBytes int64
			for i := 0; i < b.N; i++ {
				dst := newReplica(b, 1, 2)
				pr, pw := io.Pipe()
				cw := &countWriter{w: pw}
				var wg sync.WaitGroup
				wg.Add(1)
				var saveErr error
				go func() {
					defer wg.Done()
					ctx, err := r.sm.PrepareSnapshot()
					if err == nil {
						err = r.sm.SaveSnapshot(ctx, cw, nil)
					}
					saveErr = err
					_ = pw.CloseWithError(err)
				}()
				if err := dst.sm.RecoverFromSnapshot(bufio.NewReaderSize(pr, 1<<20), nil); err != nil {
					b.Fatal(err)
				}
				wg.Wait()
				if saveErr != nil {
					b.Fatal(saveErr)
				}
				streamBytes = cw.n
			}
			b.ReportMetric(float64(streamBytes)/float64(userBytes), "stream/user-bytes")
		})
		b.Run(fmt.Sprintf("baseline-iterate/state=%dMB", size>>20), func(b *testing.B) {
			b.SetBytes(userBytes)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				dst := newReplica(b, 1, 2)
				pr, pw := io.Pipe()
				go func() { _ = pw.CloseWithError(iterateInto(r, pw)) }()
				if err := reinsert(dst, bufio.NewReaderSize(pr, 1<<20)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("disk-seq-write/state=%dMB", size>>20), func(b *testing.B) {
			b.SetBytes(userBytes)
			buf := make([]byte, 1<<20)
			for i := 0; i < b.N; i++ {
				f, err := os.Create(filepath.Join(b.TempDir(), "seq"))
				if err != nil {
					b.Fatal(err)
				}
				for n := int64(0); n < userBytes; n += int64(len(buf)) {
					if _, err := f.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				_ = f.Close()
			}
		})
		b.Run(fmt.Sprintf("snappy-over-stream/state=%dMB", size>>20), func(b *testing.B) {
			// What Dragonboat's Snappy layer (SnapshotCompressionType)
			// costs and gains on a Keel stream.
			ctx, err := r.sm.PrepareSnapshot()
			if err != nil {
				b.Fatal(err)
			}
			var raw bytes.Buffer
			if err := r.sm.SaveSnapshot(ctx, &raw, nil); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(raw.Len()))
			b.ResetTimer()
			var out countWriter
			for i := 0; i < b.N; i++ {
				out = countWriter{w: io.Discard}
				w := snappy.NewBufferedWriter(&out)
				if _, err := w.Write(raw.Bytes()); err != nil {
					b.Fatal(err)
				}
				_ = w.Close()
			}
			b.ReportMetric(float64(out.n)/float64(raw.Len()), "compressed/raw")
		})
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// iterateInto writes every key and value of r as uvarint-framed pairs.
func iterateInto(r *replica, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	var frame [binary.MaxVarintLen64]byte
	q := sm.ScanQuery{Limit: sm.MaxScanLimit}
	for {
		v, err := r.sm.Lookup(q)
		if err != nil {
			return err
		}
		res := v.(sm.ScanResult)
		for _, kv := range res.Pairs {
			bw.Write(frame[:binary.PutUvarint(frame[:], uint64(len(kv.Key)))])
			bw.Write(kv.Key)
			bw.Write(frame[:binary.PutUvarint(frame[:], uint64(len(kv.Value)))])
			bw.Write(kv.Value)
		}
		if !res.More {
			return bw.Flush()
		}
		q.Start = res.NextKey
	}
}

// reinsert reads iterateInto's stream and applies it as Update batches.
func reinsert(dst *replica, r *bufio.Reader) error {
	var batch []sm.Command
	for {
		kl, err := binary.ReadUvarint(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		k := make([]byte, kl)
		if _, err := io.ReadFull(r, k); err != nil {
			return err
		}
		vl, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		v := make([]byte, vl)
		if _, err := io.ReadFull(r, v); err != nil {
			return err
		}
		batch = append(batch, sm.Command{Op: sm.OpPut, Key: k, Value: v})
		if len(batch) == 512 {
			dst.apply(batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		dst.apply(batch...)
	}
	return dst.sm.Sync()
}

// BenchmarkUpdateDuringSave measures Update latency (one 16-entry batch)
// while a snapshot is saved concurrently, against the same without one;
// the ratio is what writers feel while a follower catches up.
func BenchmarkUpdateDuringSave(b *testing.B) {
	size := 100 << 20
	r := benchReplica(b, size)
	measure := func(n int) []time.Duration {
		lat := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			cmds := make([]sm.Command, 16)
			for j := range cmds {
				cmds[j] = put(fmt.Sprintf("lat%06d-%02d", i, j), "value-value-value")
			}
			start := time.Now()
			r.apply(cmds...)
			lat = append(lat, time.Since(start))
		}
		return lat
	}
	b.ResetTimer()
	var idle, busy []time.Duration
	for i := 0; i < b.N; i++ {
		idle = append(idle, measure(2000)...)
		ctx, err := r.sm.PrepareSnapshot()
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- r.sm.SaveSnapshot(ctx, &slowSink{}, nil) }()
		for saving := true; saving; {
			busy = append(busy, measure(50)...)
			select {
			case err := <-done:
				if err != nil {
					b.Fatal(err)
				}
				saving = false
			default:
			}
		}
	}
	b.ReportMetric(float64(percentile(idle, 0.5).Microseconds()), "idle-p50-µs")
	b.ReportMetric(float64(percentile(idle, 0.99).Microseconds()), "idle-p99-µs")
	b.ReportMetric(float64(percentile(busy, 0.5).Microseconds()), "saving-p50-µs")
	b.ReportMetric(float64(percentile(busy, 0.99).Microseconds()), "saving-p99-µs")
	b.ReportMetric(float64(percentile(busy, 0.99))/float64(percentile(idle, 0.99)), "p99-ratio")
}

// slowSink accepts the stream at about 200 MB/s, like a fast network link,
// so Save lasts long enough to measure.
type slowSink struct{}

func (slowSink) Write(p []byte) (int, error) {
	time.Sleep(time.Duration(len(p)) * 5) // 5ns/byte
	return len(p), nil
}
