package main

import (
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keel-db/keel/engine"
)

// smallReplica writes pairs into a fresh replica layout (sm/shard-1/
// replica-1) with the engine alone and returns its data directory.
func smallReplica(t *testing.T, pairs map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	e, err := engine.OpenRoot(filepath.Join(dir, "sm", "shard-1", "replica-1"), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := e.NewBatch()
	for k, v := range pairs {
		if err := b.Put([]byte(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetAppliedIndex(1); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestScanOutput: text lines are not padded to the longest key; long
// values are cut at --width unless --full; a cut scan says so on stderr
// with the key to continue from; --json carries binary keys and values
// in base64 and says more/next_key.
func TestScanOutput(t *testing.T) {
	long := strings.Repeat("v", 200)
	dir := smallReplica(t, map[string]string{
		"a": "1", "a-much-longer-key": "2", "bin\xff": "\x00\xfe", "long": long, "z": "last",
	})
	r := keelctl("scan", dir, "--limit", "4")
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 4 {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if lines[0] != "a 1" || lines[1] != "a-much-longer-key 2" || lines[2] != `"bin\xff" "\x00\xfe"` {
		t.Fatalf("lines %q: want each key then one space then its value", lines[:3])
	}
	if !strings.HasPrefix(lines[3], "long "+strings.Repeat("v", defaultWidth)+"… (200 bytes") {
		t.Fatalf("long value not cut at %d: %q", defaultWidth, lines[3])
	}
	if !strings.Contains(r.stderr, "--limit 4 reached; continue with --start z") {
		t.Fatalf("no more line on stderr: %q", r.stderr)
	}
	r = keelctl("scan", dir, "--start", "long", "--full")
	if r.stdout != "long "+long+"\nz last\n" || r.stderr != "" {
		t.Fatalf("--full: stdout %q stderr %q", r.stdout, r.stderr)
	}

	r = keelctl("scan", "--json", dir, "--limit", "3")
	var out struct {
		Pairs []map[string]string `json:"pairs"`
		More  bool                `json:"more"`
		Next  string              `json:"next_key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Pairs) != 3 || !out.More || out.Next != "long" {
		t.Fatalf("scan --json: %v %q", err, r.stdout)
	}
	bin := out.Pairs[2]
	if bin["key_base64"] != base64.StdEncoding.EncodeToString([]byte("bin\xff")) ||
		bin["value_base64"] != base64.StdEncoding.EncodeToString([]byte("\x00\xfe")) || bin["key"] != "" {
		t.Fatalf("binary pair in --json: %v", bin)
	}
	if out.Pairs[0]["key"] != "a" || out.Pairs[0]["value"] != "1" {
		t.Fatalf("text pair in --json: %v", out.Pairs[0])
	}
}

// TestWrongShardNamesReplicas: --shard N that is not there names the
// replicas the directory does hold.
func TestWrongShardNamesReplicas(t *testing.T) {
	dir := smallReplica(t, map[string]string{"k": "v"})
	r := keelctl("hash", "--shard", "7", dir)
	if r.code != exitUsage || !strings.Contains(r.stderr, "no replica matching --shard 7; it holds shard 1 replica 1") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}
