package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/proctest"
)

// Disk guard flags for the small filesystems below: a 128 MiB tmpfs holds
// an idle replica (a few MiB of LogDB, Pebble's preallocated WAL), the
// ballast and the reserve with room to spare.
var diskFlags = []string{"--disk-reserve", "24MiB", "--disk-ballast", "8MiB"}

const (
	diskReserve = 24 << 20
	diskBallast = 8 << 20
	// diskWait bounds how long the guard may take to notice a change: one
	// check a second, plus a leader transfer.
	diskWait = 15 * time.Second
)

// smallFS mounts a tmpfs of size (e.g. "128m") for the test and unmounts it
// after the test's processes were killed (cleanups run last-in first-out,
// and every process is started after the mount).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs a size-limited tmpfs: Linux only")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a size-limited tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill allocates a filler file under dir so that about leave bytes stay
// free, and returns its path. leave 0 fills the filesystem to the last
// byte.
func fill(t *testing.T, dir string, leave uint64) string {
	t.Helper()
	du, err := vfs.Default.GetDiskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if du.AvailBytes > leave {
		if err := allocateFile(f, int64(du.AvailBytes-leave)); err != nil && !errors.Is(err, syscall.ENOSPC) {
			t.Fatal(err)
		}
	}
	if leave == 0 {
		// Whatever fallocate left (the replica wrote meanwhile).
		buf := make([]byte, 4096)
		for {
			if _, err := f.Write(buf); err != nil {
				break
			}
		}
	}
	return path
}

// diskStatusBody is the disk part of /status the tests read.
type diskStatusBody struct {
	LeaderID uint64 `json:"leader_id"`
	IsLeader bool   `json:"is_leader"`
	DiskFull bool   `json:"disk_full"`
	Disk     struct {
		AvailBytes    uint64 `json:"avail_bytes"`
		BallastBytes  uint64 `json:"ballast_bytes"`
		RefusedWrites uint64 `json:"refused_writes"`
	} `json:"disk"`
}

func (n *node) diskStatus() (diskStatusBody, error) {
	var st diskStatusBody
	err := proctest.GetJSON(httpc, n.url("/status"), &st)
	return st, err
}

// waitDisk waits until n reports disk_full == full.
func waitDisk(t *testing.T, n *node, full bool) diskStatusBody {
	t.Helper()
	var st diskStatusBody
	if err := n.proc.Poll(diskWait, func() (err error) {
		if st, err = n.diskStatus(); err == nil && st.DiskFull != full {
			err = fmt.Errorf("disk_full %v, avail %d", st.DiskFull, st.Disk.AvailBytes)
		}
		return err
	}); err != nil {
		t.Fatalf("%s: waiting for disk_full %v: %v", n.name, full, err)
	}
	return st
}

// startOn starts a one-replica keeld with its data under dir.
func startOn(t *testing.T, dir string, extra ...string) *node {
	t.Helper()
	for attempt := 0; ; attempt++ {
		n := newNode(t, "keeld", filepath.Join(dir, fmt.Sprint("data", attempt)), extra...)
		n.start()
		err := n.waitReady()
		if err == nil {
			return n
		}
		if errors.Is(err, errAddrInUse) && attempt < 3 {
			continue
		}
		t.Fatal(err)
	}
}

// expect507 checks that a write through n is refused as insufficient
// storage, with a JSON error.
func expect507(t *testing.T, n *node, method, path string, body []byte) {
	t.Helper()
	code, b := do(t, method, n.url(path), body)
	var e struct{ Error string }
	if code != http.StatusInsufficientStorage || json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error, "insufficient storage") {
		t.Fatalf("%s %s on a full disk: %d %s, want 507 with a JSON error", method, path, code, b)
	}
}

// checkNoPanic fails the test if n's process exited or printed a panic.
func checkNoPanic(t *testing.T, n *node) {
	t.Helper()
	if exited, err := n.proc.Exited(); exited {
		t.Fatalf("%s exited (%v): %s", n.name, err, n.proc.Output())
	}
	if out := n.proc.Output(); strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Fatalf("%s logged a panic:\n%s", n.name, out)
	}
}

// TestDiskFullSingleReplica: a replica whose filesystem fills (another
// program's file, not its own writes) refuses writes with 507, gives back
// its ballast, keeps serving reads, and takes writes again once the space
// is freed, without a restart and without losing an acknowledged write.
func TestDiskFullSingleReplica(t *testing.T) {
	mnt := smallFS(t, "128m")
	n := startOn(t, mnt, diskFlags...)
	var acked []string
	for i := 0; i < 20; i++ {
		k := fmt.Sprint("before-", i)
		mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/"+k), []byte(k))
		acked = append(acked, k)
	}
	if st := waitDisk(t, n, false); st.Disk.BallastBytes != diskBallast {
		t.Fatalf("ballast %d bytes, want %d", st.Disk.BallastBytes, diskBallast)
	}
	ballast := filepath.Join(n.dataDir, ballastName)
	if fi, err := os.Stat(ballast); err != nil || fi.Size() != diskBallast {
		t.Fatalf("ballast file: %v %v", fi, err)
	}

	filler := fill(t, mnt, diskReserve/2)
	st := waitDisk(t, n, true)
	if st.Disk.BallastBytes != 0 {
		t.Fatalf("ballast still held (%d bytes) while full", st.Disk.BallastBytes)
	}
	if _, err := os.Stat(ballast); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ballast file still there while full: %v", err)
	}
	expect507(t, n, "PUT", "/kv/refused", []byte("v"))
	expect507(t, n, "DELETE", "/kv/before-0", nil)
	expect507(t, n, "POST", "/txn", []byte(`{"then":[{"put":"refused","value":"v"}]}`))
	// Reads, linearizable and stale, and scans still work.
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/before-3"), nil); string(got) != "before-3" {
		t.Fatalf("GET on a full disk = %q", got)
	}
	mustDo(t, http.StatusOK, "GET", n.url("/kv/before-4?stale=true"), nil)
	mustDo(t, http.StatusOK, "GET", n.url("/kv?prefix=before-"), nil)
	metrics := string(mustDo(t, http.StatusOK, "GET", n.url("/metrics"), nil))
	if !strings.Contains(metrics, "keel_disk_full 1") || !strings.Contains(metrics, "keel_disk_refused_writes_total 3") {
		t.Fatalf("metrics lack keel_disk_full 1 and 3 refused writes:\n%s", grepLines(metrics, "keel_disk_"))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if st := waitDisk(t, n, false); st.Disk.BallastBytes != diskBallast {
		t.Fatalf("ballast %d bytes after space came back, want it re-created (%d)", st.Disk.BallastBytes, diskBallast)
	}
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/after"), []byte("after"))
	acked = append(acked, "after")
	for _, k := range acked {
		if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/"+k), nil); string(got) != k {
			t.Fatalf("%s = %q after recovery", k, got)
		}
	}
	if code, _ := do(t, "GET", n.url("/kv/refused"), nil); code != http.StatusNotFound {
		t.Fatalf("a refused write was applied: GET refused = %d", code)
	}
	checkNoPanic(t, n)
}

// TestDiskFullLeaderMoves: in a three-replica shard the leader's disk
// fills. It refuses writes with 507 and hands leadership to another
// member, so the shard keeps taking writes through the others; reads
// through it still work; once the space is freed it takes writes again and
// every acknowledged write is on every replica.
func TestDiskFullLeaderMoves(t *testing.T) {
	mnts := []string{smallFS(t, "128m"), smallFS(t, "128m"), smallFS(t, "128m")}
	nodes := startClusterOn(t, mnts, diskFlags...)
	var leader *node
	var li int
	proctest.Eventually(t, "a leader is known", readyTimeout, func() error {
		for i, n := range nodes {
			if st, err := n.diskStatus(); err == nil && st.IsLeader {
				leader, li = n, i
				return nil
			}
		}
		return errors.New("no replica leads")
	})
	other := nodes[(li+1)%3]
	var acked []string
	put := func(n *node, k string) {
		t.Helper()
		// A write during the transfer may be dropped (503); retry it.
		proctest.Eventually(t, "PUT "+k, diskWait, func() error {
			code, b := do(t, "PUT", n.url("/kv/"+k), []byte(k))
			if code != http.StatusNoContent {
				return fmt.Errorf("status %d: %s", code, b)
			}
			return nil
		})
		acked = append(acked, k)
	}
	for i := 0; i < 10; i++ {
		put(other, fmt.Sprint("before-", i))
	}

	filler := fill(t, mnts[li], diskReserve/2)
	waitDisk(t, leader, true)
	proctest.Eventually(t, "leadership leaves the full replica", diskWait, func() error {
		st, err := other.diskStatus()
		if err != nil {
			return err
		}
		if st.LeaderID == 0 || st.LeaderID == uint64(li+1) {
			return fmt.Errorf("leader %d", st.LeaderID)
		}
		return nil
	})
	expect507(t, leader, "PUT", "/kv/refused", []byte("v"))
	for i := 0; i < 10; i++ {
		put(nodes[(li+1+i%2)%3], fmt.Sprint("during-", i))
	}
	// The full replica still answers linearizable reads through the new
	// leader.
	if got := mustDo(t, http.StatusOK, "GET", leader.url("/kv/during-9"), nil); string(got) != "during-9" {
		t.Fatalf("read through the full replica = %q", got)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitDisk(t, leader, false)
	put(leader, "after")
	for _, n := range nodes {
		for _, k := range acked {
			proctest.Eventually(t, n.name+" has "+k, catchUpTimeout, func() error { return staleValue(n, k) })
		}
		checkNoPanic(t, n)
	}
}

// startClusterOn starts len(dirs) keeld processes forming one cluster,
// replica i's data under dirs[i], retrying with fresh ports when one lost a
// port race; extra goes to every process.
func startClusterOn(t *testing.T, dirs []string, extra ...string) []*node {
	t.Helper()
	for attempt := 0; ; attempt++ {
		nodes := make([]*node, len(dirs))
		members := map[uint64]string{}
		for i := range nodes {
			nodes[i] = newNode(t, fmt.Sprintf("replica-%d", i+1), filepath.Join(dirs[i], fmt.Sprint("a", attempt)))
			members[uint64(i+1)] = nodes[i].raftAddr
		}
		for i, n := range nodes {
			n.extra = append([]string{"--replica-id", fmt.Sprint(i + 1), "--members", host.FormatMembers(members)}, extra...)
			n.start()
		}
		var err error
		for _, n := range nodes {
			if err = n.waitReady(); err != nil {
				break
			}
		}
		if err == nil {
			return nodes
		}
		for _, n := range nodes {
			n.kill()
		}
		if errors.Is(err, errAddrInUse) && attempt < 3 {
			continue
		}
		t.Fatal(err)
	}
}

// TestDiskFullExitsCleanly: with the reserve and the ballast off, writes
// run the filesystem out of space. keeld ends with one line and exit
// status 3, not a panic, and after the space is freed a restart has every
// acknowledged write.
func TestDiskFullExitsCleanly(t *testing.T) {
	mnt := smallFS(t, "64m")
	n := startOn(t, mnt, "--disk-reserve", "0", "--disk-ballast", "0")
	var acked []string
	value := bytes.Repeat([]byte("v"), 64<<10)
	for i := 0; i < 20; i++ {
		k := fmt.Sprint("before-", i)
		mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/"+k), value)
		acked = append(acked, k)
	}
	filler := fill(t, mnt, 0)
	for i := 0; i < 5000; i++ {
		if exited, _ := n.proc.Exited(); exited {
			break
		}
		k := fmt.Sprint("k-", i)
		req, err := http.NewRequest("PUT", n.url("/kv/"+k), bytes.NewReader(value))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := httpc.Do(req)
		if err != nil {
			continue // the process is going away
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNoContent {
			acked = append(acked, k)
		}
	}
	if err := n.proc.Wait(exitTimeout); err != nil && !errors.Is(err, proctest.ErrExited) {
		t.Logf("wait: %v", err)
	}
	out := n.proc.Output()
	if code := n.proc.ExitCode(); code != exitStorage {
		t.Fatalf("exit status %d, want %d; output:\n%s", code, exitStorage, out)
	}
	if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Fatalf("a panic trace instead of one line:\n%s", out)
	}
	if !strings.Contains(out, "keeld: disk full: ") {
		t.Fatalf("no one-line disk-full error:\n%s", out)
	}
	t.Logf("%d writes acknowledged before the disk filled; last line: %s", len(acked), lastLine(out))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	n.start()
	if err := n.waitReady(); err != nil {
		t.Fatal(err)
	}
	for _, k := range acked {
		code, b := do(t, "GET", n.url("/kv/"+k), nil)
		if code != http.StatusOK || !bytes.Equal(b, value) {
			t.Fatalf("acknowledged %s after restart: %d (%d bytes)", k, code, len(b))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
