//go:build linux

package main

import (
	"context"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testcluster"
)

// TestChildPhases runs steady, restart and load in this process on two
// shards of each kind: the restart finds what steady wrote, and Keel's
// tablets show up in the open files and the sm directory.
func TestChildPhases(t *testing.T) {
	if testing.Short() {
		t.Skip("starts NodeHosts")
	}
	testcluster.Quiet()
	for _, kind := range []string{kindNoop, kindKeel} {
		t.Run(kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			addr, err := freeAddr()
			if err != nil {
				t.Fatal(err)
			}
			a := childArgs{Kind: kind, Shards: 2, Dir: t.TempDir(), Addr: addr, Idle: 200 * time.Millisecond,
				Load: 300 * time.Millisecond, RestartRuns: 2, Workers: 2, Limit: time.Minute}
			var st childResult
			if err := steady(ctx, a, &st); err != nil {
				t.Fatal(err)
			}
			if st.Memory == nil || st.Memory.RSSBytes == 0 || st.FDs == 0 || st.Disk.RaftBytes == 0 || st.IdleSeconds < 0.2 {
				t.Fatalf("steady: %+v", st)
			}
			if st.PayloadBytes != 2*keysPerShard*(keyBytes+valueBytes) {
				t.Fatalf("payload %d", st.PayloadBytes)
			}
			tablets := st.FDKinds["sm MANIFEST"]
			if (kind == kindKeel) != (tablets == 2) || (kind == kindKeel) != (st.DiskClosed.SMBytes > 0) {
				t.Fatalf("%s: %d open tablet MANIFESTs, sm dir %d bytes", kind, tablets, st.DiskClosed.SMBytes)
			}
			if kind == kindKeel && (st.Shared == nil || st.Shared.Engines != 2) {
				t.Fatalf("shared stats %+v", st.Shared)
			}
			var rs childResult
			if err := restart(ctx, a, &rs); err != nil {
				t.Fatal(err)
			}
			if len(rs.RestartSeconds) != 2 || rs.RestartMedian <= 0 {
				t.Fatalf("restart: %+v", rs)
			}
			a.Dir = t.TempDir()
			var ld childResult
			if err := load(ctx, a, &ld); err != nil {
				t.Fatal(err)
			}
			if ld.Load == nil || ld.Load.Writes == 0 || ld.Load.RSSPeakBytes == 0 {
				t.Fatalf("load: %+v", ld.Load)
			}
			if kind == kindKeel && (ld.Load.MemTableBudget == 0 || ld.Load.MemTableBytesPeak == 0) {
				t.Fatalf("load memtables: %+v", ld.Load)
			}
		})
	}
}

// TestRestartChecksValues: a Keel shard that serves an empty state does not
// count as restarted.
func TestRestartChecksValues(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NodeHost")
	}
	testcluster.Quiet()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	n, err := openNode(kindKeel, t.TempDir(), addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.close() }()
	if err := n.start(1, true); err != nil {
		t.Fatal(err)
	}
	if err := n.put(ctx, 1, key(1, 0), value(1, 1)); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
	defer rcancel()
	if err := n.read(rctx, 1, key(1, 0), value(1, 0)); err == nil {
		t.Fatal("read accepted another value")
	}
	if err := n.read(ctx, 1, key(1, 0), value(1, 1)); err != nil {
		t.Fatal(err)
	}
}
