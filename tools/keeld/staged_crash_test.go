package main

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/gbsnap"
	"github.com/keel-db/keel/internal/testkit/proctest"
)

// TestCrashBeforeAdoptingStagedImage: a follower catching up by snapshot
// stages the image while the stream arrives and has Dragonboat's own copy
// of the stream cut to its first block (host/snaptee.go). Raft records the
// snapshot; the process is then SIGKILLed (KEEL_TEST_CRASH=before-adopt)
// inside RecoverFromSnapshot, just before it publishes the staged image.
// On restart Dragonboat asks for the same snapshot again, from the cut
// file: the replica must come up on the staged image with every
// acknowledged write, and the same StateHash as the others.
func TestCrashBeforeAdoptingStagedImage(t *testing.T) {
	nodes := startClusterWith(t, "--log-keep-entries", "20")
	var victim *node
	for _, n := range nodes {
		if !n.status().IsLeader {
			victim = n
			break
		}
	}
	behind := victim.status().AppliedIndex
	victim.kill()

	// 6 MiB of incompressible values, so the stream is several of
	// Dragonboat's 2 MiB blocks even after Snappy.
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	const n, size = 400, 16 << 10
	var writer *node
	for _, x := range nodes {
		if x != victim {
			writer = x
			break
		}
	}
	for i := 0; i < n; i++ {
		v := make([]byte, size)
		for j := range v {
			v[j] = byte(r.Uint32())
		}
		if err := putRetry(writer, fmt.Sprintf("s-%04d", i), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range nodes {
		if x == victim {
			continue
		}
		proctest.Eventually(t, x.name+" compacted its log past the victim", readyTimeout, func() error {
			if st := x.status(); st.RaftLog.FirstIndex > behind+1 {
				return nil
			}
			code, body := do(t, "POST", x.url("/admin/snapshot"), nil)
			return fmt.Errorf("log not compacted yet (snapshot: %d %s)", code, body)
		})
	}

	victim.env = []string{"KEEL_TEST_CRASH=before-adopt"}
	victim.start()
	select {
	case <-victim.proc.Done():
	case <-time.After(readyTimeout):
		t.Fatal("the follower did not reach the crash point: no staged image was adopted")
	}
	if !victim.proc.Crashed() || victim.proc.ExitCode() != -1 {
		t.Fatalf("the follower ended with status %d, want killed by the crash point\n%s", victim.proc.ExitCode(), victim.proc.Output())
	}
	// Raft recorded the snapshot (its final dir exists) and its file is
	// the cut one: only the staged image holds the data now.
	var cut, staged int
	_ = filepath.WalkDir(victim.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if strings.HasSuffix(p, ".gbsnap") && !strings.Contains(p, ".receiving") {
			if fi, err := d.Info(); err == nil && fi.Size() == gbsnap.ReceivedKeep {
				cut++
			}
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), "stg-") {
			staged++
		}
		return nil
	})
	if cut != 1 || staged != 1 {
		t.Fatalf("after the crash: %d recorded snapshot files cut to %d bytes, %d staged images; want 1 and 1", cut, gbsnap.ReceivedKeep, staged)
	}

	victim.env = nil
	victim.start()
	if err := victim.waitReady(); err != nil {
		t.Fatal(err)
	}
	waitHashesEqual(t, 1, nodes)
	lines, err := shardLines(victim)
	if err != nil {
		t.Fatal(err)
	}
	if l := lines[1]; l.SnapshotsAdopted != 1 {
		t.Fatalf("restarted follower: %+v, want the staged image adopted", l)
	}
	for i := 0; i < n; i += 7 {
		code, got := do(t, "GET", victim.url(fmt.Sprintf("/kv/s-%04d?stale=true", i)), nil)
		if code != http.StatusOK || len(got) != size {
			t.Fatalf("stale GET s-%04d on the restarted follower: %d, %d bytes", i, code, len(got))
		}
	}
	// The adoption removed the staged image.
	staged = 0
	_ = filepath.WalkDir(victim.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && strings.HasPrefix(d.Name(), "stg-") {
			staged++
		}
		return nil
	})
	if staged != 0 {
		t.Fatalf("%d staged images left after the adoption", staged)
	}
}
