package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	eventually(t, "a timer snapshot", 30*time.Second, func() error {
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
	for _, want := range []string{`keel_snapshots_total{kind="saved"} 1`, "keel_raft_log_compactions_total", "keel_raft_log_disk_bytes"} {
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
	var out bytes.Buffer
	cmd := exec.Command(keeldBin, "--data-dir", filepath.Join(dir, "data"), "--http", freeAddr(t),
		"--raft-addr", freeAddr(t), "--sm-plugin", missing)
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(exitTimeout):
		_ = cmd.Process.Kill()
		t.Fatalf("still running after %v", exitTimeout)
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(out.String(), missing) ||
		!strings.Contains(out.String(), "not found") || strings.Contains(out.String(), "panic") {
		t.Fatalf("exit %d, output %q", code, out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "sm")); err == nil {
		t.Fatal("created a state directory before the plugin loaded")
	}
}
