//go:build linux

package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	line := []byte("1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 100 0 0")
	got, err := parseStatCPU(line)
	if err != nil {
		t.Fatal(err)
	}
	if got != 3.25 {
		t.Fatalf("cpu = %v, want 3.25 (325 ticks)", got)
	}
	if _, err := parseStatCPU([]byte("1234 no parens")); err == nil {
		t.Fatal("no error for a line without a command name")
	}
}

func TestParseStatusMem(t *testing.T) {
	rss, hwm, err := parseStatusMem([]byte("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"))
	if err != nil || rss != 1<<20 || hwm != 2<<20 {
		t.Fatalf("rss %d hwm %d err %v", rss, hwm, err)
	}
	if _, _, err := parseStatusMem([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Fatal("no error for a unit other than kB")
	}
	if _, _, err := parseStatusMem([]byte("Name:\tx\n")); err == nil {
		t.Fatal("no error without VmRSS")
	}
}

func TestOpenFilesCountsByKind(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sm", "shard-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	n0, k0, err := openFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	for _, name := range []string{"000001.sst", "000002.sst", "MANIFEST-000003"} {
		f, err := os.Create(filepath.Join(dir, "sm", "shard-1", name))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	d, err := os.Open(filepath.Join(dir, "sm", "shard-1"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, d)
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	n1, k1, err := openFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n1-n0 != 4 {
		t.Fatalf("open files went from %d to %d, want +4", n0, n1)
	}
	if k1["sm sst"]-k0["sm sst"] != 2 || k1["sm MANIFEST"] != 1 || k1["sm dir"] != 1 {
		t.Fatalf("kinds %v", k1)
	}
	if k1["proc"] != 0 {
		t.Fatalf("the listing's own descriptor was counted: %v", k1)
	}
}
