package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/proctest"
)

// TestSnapshotTimerAndExport: with a short --snapshot-interval the timer
// takes a snapshot once something was applied; POST /admin/export writes an
// exported snapshot under --export-dir; /status and /metrics show both.
func TestSnapshotTimerAndExport(t *testing.T) {
	exportDir := filepath.Join(t.TempDir(), "exports")
	n := startSingle(t, "--snapshot-interval", "200ms", "--export-dir", exportDir)
	for i := 0; i < 20; i++ {
		mustDo(t, http.StatusNoContent, http.MethodPut, n.url(fmt.Sprintf("/kv/k%02d", i)), []byte("v"))
	}
	proctest.Eventually(t, "a timer snapshot", 30*time.Second, func() error {
		if st := n.status(); st.Snapshots.TimerTaken == 0 {
			return fmt.Errorf("no timer snapshot yet")
		}
		return nil
	})
	st := n.status()
	if !st.RaftLog.Compaction || st.RaftLog.LastIndex < st.AppliedIndex || st.RaftLog.DiskBytes == 0 {
		t.Fatalf("raft log status %+v (applied %d)", st.RaftLog, st.AppliedIndex)
	}
	var exp struct {
		Index uint64 `json:"index"`
		Path  string `json:"path"`
	}
	decode(t, mustDo(t, http.StatusOK, http.MethodPost, n.url("/admin/export"), nil), &exp)
	if exp.Index < st.AppliedIndex || !strings.HasPrefix(exp.Path, exportDir) {
		t.Fatalf("export %+v, applied %d, export dir %s", exp, st.AppliedIndex, exportDir)
	}
	for _, pat := range []string{"*.gbsnap", "snapshot.metadata"} {
		if m, _ := filepath.Glob(filepath.Join(exp.Path, pat)); len(m) != 1 {
			t.Fatalf("export dir %s: %d files match %s", exp.Path, len(m), pat)
		}
	}
	if st := n.status(); st.Snapshots.Saved != 1 {
		t.Fatalf("snapshots after export: %+v", st.Snapshots)
	}
	metrics := string(mustDo(t, http.StatusOK, http.MethodGet, n.url("/metrics"), nil))
	for _, want := range []string{`keel_snapshots_total{kind="saved",replica="1",shard="1"} 1`, "keel_raft_log_compactions_total", "keel_raft_log_disk_bytes"} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("/metrics lacks %q", want)
		}
	}
}

// TestMissingPluginExit1: --sm-plugin naming a missing file stops start-up
// with one clear line naming it, exit status 1.
func TestMissingPluginExit1(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.so")
	a := proctest.FreeAddrs(t, 2)
	code, out := runKeeld(t, "", "--data-dir", filepath.Join(dir, "data"), "--http", a[0], "--raft-addr", a[1], "--sm-plugin", missing)
	if code != 1 || !strings.Contains(out, missing) || !strings.Contains(out, "not found") || strings.Contains(out, "panic") {
		t.Fatalf("exit %d, output %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "sm")); err == nil {
		t.Fatal("created a state directory before the plugin loaded")
	}
}
