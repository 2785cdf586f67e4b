package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
)

// The regression test for the lost-writes trap (docs/design.md §3): an export taken
// while writes go on must be exact at its index, or after an import the
// shard's new log reuses indexes the image already claims and new writes
// are skipped. Three replicas; write A; export while a writer runs; write
// B; stop everything; import into fresh replicas; A is there, B is not, the
// concurrent writer's keys are a prefix, and new writes apply everywhere.
func TestSnapshotExportImport(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.Leader()
	ssLoad(t, leader.Client, "a/", 3000, 4, 64)
	ssPut(t, leader.Client, "a/changed-later", "A")
	ssPut(t, leader.Client, "a/deleted-later", "A")

	// Writers racing the export: each writes its own sequence of keys, so
	// what an exact image holds of each is a prefix. Enough of them that
	// applies land while the export's checkpoint is taken, which is what
	// makes a late image (docs/design.md §3) lose writes after the import.
	const writers = 16
	var acked, started [writers]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			val := string(make([]byte, 16<<10))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				started[w].Store(int64(i + 1))
				ssPut(t, leader.Client, fmt.Sprintf("w/%d/%06d", w, i), val)
				acked[w].Store(int64(i + 1))
			}
		}()
	}
	c.WaitFor(30*time.Second, "the racing writers to start", func() bool { return acked[writers-1].Load() >= 20 })
	var ackedBefore, startedAfter [writers]int64
	for w := range acked {
		ackedBefore[w] = acked[w].Load()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	index, path, err := host.Export(ctx, leader.NH, c.ShardID, filepath.Join(t.TempDir(), "export"))
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	for w := range started {
		startedAfter[w] = started[w].Load()
	}
	c.WaitFor(30*time.Second, "writes after the export", func() bool { return acked[0].Load() >= startedAfter[0]+20 })
	close(stop)
	wg.Wait()
	t.Logf("exported index %d to %s; writers acked %v before, started %v by the end", index, path, ackedBefore, startedAfter)

	// B: after the export.
	ssLoad(t, leader.Client, "b/", 300, 4, 64)
	ssPut(t, leader.Client, "a/changed-later", "B")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := leader.Client.Delete(ctx2, []byte("a/deleted-later")); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// Fresh replicas: new directories, the same shard, IDs and addresses.
	base := t.TempDir()
	var nodes []*ssNode
	for id, addr := range c.Members {
		dir := filepath.Join(base, fmt.Sprintf("fresh-%d", id))
		if err := host.Import(ssNodeHostConfig(dir, addr), path, c.Members, id); err != nil {
			t.Fatalf("import on replica %d: %v", id, err)
		}
	}
	for id := range c.Members {
		nodes = append(nodes, ssStartImported(t, filepath.Join(base, fmt.Sprintf("fresh-%d", id)), c.ShardID, id, c.Members))
	}
	cl := nodes[0].client
	checkPrefix := func(prefix string, want int, value string) {
		t.Helper()
		n := 0
		q := client.ScanQuery{Prefix: []byte(prefix), Limit: 5000}
		for {
			var res client.ScanResult
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := testcluster.Retry(ctx, func(ctx context.Context) error {
				var err error
				res, err = cl.Scan(ctx, q)
				return err
			})
			cancel()
			if err != nil {
				t.Fatalf("scan %s: %v", prefix, err)
			}
			for _, kv := range res.Pairs {
				if value != "" && string(kv.Value) != value {
					t.Fatalf("%s = %q, want %q", kv.Key, kv.Value, value)
				}
			}
			n += len(res.Pairs)
			if !res.More {
				break
			}
			q.Start = res.NextKey
		}
		if want >= 0 && n != want {
			t.Fatalf("%d keys under %s after import, want %d", n, prefix, want)
		}
	}
	checkPrefix("a/changed-later", 1, "A")
	checkPrefix("a/deleted-later", 1, "A")
	checkPrefix("b/", 0, "")
	// The racing writers' keys: everything acked before the export is
	// there, nothing started after it, and each writer's keys are a prefix.
	present := 0
	for w := 0; w < writers; w++ {
		var keys []string
		q := client.ScanQuery{Prefix: []byte(fmt.Sprintf("w/%d/", w)), Limit: 5000}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := testcluster.Retry(ctx, func(ctx context.Context) error {
			res, err := cl.Scan(ctx, q)
			keys = keys[:0]
			for _, kv := range res.Pairs {
				keys = append(keys, string(kv.Key))
			}
			return err
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			if want := fmt.Sprintf("w/%d/%06d", w, i); k != want {
				t.Fatalf("writer %d: key %d is %s, want %s (not a prefix)", w, i, k, want)
			}
		}
		if n := int64(len(keys)); n < ackedBefore[w] || n > startedAfter[w] {
			t.Fatalf("writer %d: %d keys after import, want between %d (acked before the export) and %d (started before it returned)",
				w, n, ackedBefore[w], startedAfter[w])
		}
		present += len(keys)
	}
	// Every key of A (3000 + the two singles).
	checkPrefix("a/", 3002, "")

	// New writes after the import apply (a late image would skip them as
	// already applied) and reach every replica.
	for i := 0; i < 200; i++ {
		ssPut(t, cl, fmt.Sprintf("c/%04d", i), "C")
	}
	checkPrefix("c/", 200, "C")
	var clients []*client.Client
	for _, n := range nodes {
		clients = append(clients, n.client)
	}
	h := ssConverged(t, clients, 60*time.Second)
	if want := uint64(3002 + present + 200); h.Keys != want {
		t.Fatalf("replicas hold %d keys, want %d", h.Keys, want)
	}
	for _, n := range nodes {
		if st := ssStats(n.factory, c.ShardID, n.id); st.Received != 1 {
			t.Fatalf("replica %d: snapshot stats %+v, want one install", n.id, st)
		}
	}
}
