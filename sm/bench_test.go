package sm_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4/statemachine"
)

// Micro-benchmarks of the state machine's hot paths: the command codec,
// Update (one Pebble batch per Raft batch) and lookups. `make bench` runs
// them; bench/README.md explains how they relate to the cluster figures.

// benchValue returns n random bytes, so Pebble's block compression cannot
// shrink the state below its nominal size.
func benchValue(rng *rand.Rand, n int) []byte {
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(rng.Uint32())
	}
	return v
}

func benchKey(i int) []byte { return []byte(fmt.Sprintf("k%015d", i)) } // 16 bytes

func BenchmarkCodec(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{16, 256, 4096} {
		cmd := sm.Command{Op: sm.OpPut, Key: benchKey(1), Value: benchValue(rng, size)}
		enc, err := cmd.Encode()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("encode/value=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				if _, err := cmd.Encode(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("decode/value=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				if _, err := sm.Decode(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	txn := sm.Command{Op: sm.OpTxn,
		Conds: []sm.Cond{{Kind: sm.CondAbsent, Key: benchKey(1)}, {Kind: sm.CondValueEquals, Key: benchKey(2), Value: benchValue(rng, 256)}},
		Ops:   []sm.TxnOp{{Op: sm.OpPut, Key: benchKey(1), Value: benchValue(rng, 256)}, {Op: sm.OpDelete, Key: benchKey(2)}}}
	enc, err := txn.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode/txn-2+2", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			if _, err := sm.Decode(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// openBench opens a state machine in a temporary directory.
func openBench(b *testing.B) *sm.StateMachine {
	b.Helper()
	s := sm.New(sm.Config{Dir: b.TempDir(), ShardID: 1, ReplicaID: 1})
	if _, err := s.Open(make(chan struct{})); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkUpdate applies Raft batches of puts (16-byte keys, 256-byte
// values): each Update is one Pebble batch, unsynced, as Dragonboat calls
// it. Batch sizes are what a leader sees at low and high concurrency.
func BenchmarkUpdate(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := openBench(b)
			rng := rand.New(rand.NewPCG(3, 4))
			// A pool of encoded commands, reused with fresh keys' worth of
			// variety; encoding is measured by BenchmarkCodec.
			pool := make([][]byte, 4096)
			for i := range pool {
				c := sm.Command{Op: sm.OpPut, Key: benchKey(i), Value: benchValue(rng, 256)}
				enc, err := c.Encode()
				if err != nil {
					b.Fatal(err)
				}
				pool[i] = enc
			}
			entries := make([]statemachine.Entry, batch)
			var index uint64
			b.ReportAllocs()
			b.SetBytes(int64(batch * len(pool[0])))
			n := 0
			for b.Loop() {
				for i := range entries {
					index++
					entries[i] = statemachine.Entry{Index: index, Cmd: pool[n%len(pool)]}
					n++
				}
				if _, err := s.Update(entries); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/entry")
		})
	}
}

// BenchmarkLookup reads a state of 100,000 keys (256-byte values): a hit,
// a miss, and a 100-key scan.
func BenchmarkLookup(b *testing.B) {
	const keys = 100_000
	s := openBench(b)
	rng := rand.New(rand.NewPCG(5, 6))
	var index uint64
	entries := make([]statemachine.Entry, 0, 512)
	for i := 0; i < keys; i++ {
		c := sm.Command{Op: sm.OpPut, Key: benchKey(i), Value: benchValue(rng, 256)}
		enc, err := c.Encode()
		if err != nil {
			b.Fatal(err)
		}
		index++
		entries = append(entries, statemachine.Entry{Index: index, Cmd: enc})
		if len(entries) == cap(entries) || i == keys-1 {
			if _, err := s.Update(entries); err != nil {
				b.Fatal(err)
			}
			entries = entries[:0]
		}
	}
	b.Run("get/hit", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(256)
		i := 0
		for b.Loop() {
			r, err := s.Lookup(sm.GetQuery{Key: benchKey(i * 7919 % keys)})
			if err != nil || !r.(sm.GetResult).Found {
				b.Fatalf("get: %v %v", r, err)
			}
			i++
		}
	})
	b.Run("get/miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := s.Lookup(sm.GetQuery{Key: []byte("missing-key-0000")})
			if err != nil || r.(sm.GetResult).Found {
				b.Fatalf("get: %v %v", r, err)
			}
		}
	})
	b.Run("scan/limit=100", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(100 * (256 + 16))
		i := 0
		for b.Loop() {
			r, err := s.Lookup(sm.ScanQuery{Start: benchKey(i * 7919 % (keys - 200)), Limit: 100})
			if err != nil || len(r.(sm.ScanResult).Pairs) != 100 {
				b.Fatalf("scan: %v", err)
			}
			i++
		}
		b.ReportMetric(float64(i*100)/b.Elapsed().Seconds(), "keys/s")
	})
}
