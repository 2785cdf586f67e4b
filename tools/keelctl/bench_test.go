package main

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/keel-db/keel/engine"
)

// benchReplica writes a replica of about mb MiB of incompressible values
// in keeld's layout (no Raft log: export gets --term and --members).
func benchReplica(b *testing.B, mb int) string {
	b.Helper()
	dir := b.TempDir()
	e, err := engine.OpenRoot(filepath.Join(dir, "sm", "shard-1", "replica-1"), engine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.SetIdentity(engine.Identity{ShardID: 1, ReplicaID: 1}); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	val := make([]byte, 4096)
	var index uint64
	for i := 0; i < mb*256; i += 256 {
		batch := e.NewBatch()
		for j := i; j < i+256; j++ {
			rng.Read(val)
			if err := batch.Put([]byte(fmt.Sprintf("k/%08d", j)), val); err != nil {
				b.Fatal(err)
			}
		}
		index++
		if err := batch.SetAppliedIndex(index); err != nil {
			b.Fatal(err)
		}
		if err := batch.Commit(false); err != nil {
			b.Fatal(err)
		}
		_ = batch.Close()
	}
	if err := e.Close(); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkExportVerify measures keelctl export (stream, Snappy, envelope,
// built-in verify) and a separate verify of the result.
func BenchmarkExportVerify(b *testing.B) {
	for _, mb := range []int{16, 128} {
		b.Run(fmt.Sprintf("%dMiB", mb), func(b *testing.B) {
			dir := benchReplica(b, mb)
			b.SetBytes(int64(mb) << 20)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out := filepath.Join(b.TempDir(), "out")
				if r := keelctl("export", "--term", "1", "--members", "1=127.0.0.1:1", dir, out); r.code != 0 {
					b.Fatalf("export: %s", r.stderr)
				}
				if r := keelctl("verify", out); r.code != 0 {
					b.Fatalf("verify: %s", r.stderr)
				}
			}
		})
	}
}

// BenchmarkVerify measures verify alone on an export.
func BenchmarkVerify(b *testing.B) {
	for _, mb := range []int{16, 128} {
		b.Run(fmt.Sprintf("%dMiB", mb), func(b *testing.B) {
			dir := benchReplica(b, mb)
			out := filepath.Join(b.TempDir(), "out")
			if r := keelctl("export", "--term", "1", "--members", "1=127.0.0.1:1", dir, out); r.code != 0 {
				b.Fatalf("export: %s", r.stderr)
			}
			b.SetBytes(int64(mb) << 20)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := keelctl("verify", out); r.code != 0 {
					b.Fatalf("verify: %s", r.stderr)
				}
			}
		})
	}
}
