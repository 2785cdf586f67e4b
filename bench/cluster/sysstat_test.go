//go:build linux

package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestProcSelf(t *testing.T) {
	// Burn a little CPU so the tick-based counter is above zero.
	x := 0
	for i := 0; i < 50_000_000; i++ {
		x += i % 7
	}
	_ = x
	cpu, err := procCPU(os.Getpid())
	if err != nil || cpu <= 0 {
		t.Fatalf("procCPU = %v, %v", cpu, err)
	}
	rss, hwm, err := procMem(os.Getpid())
	if err != nil || rss == 0 || hwm < rss {
		t.Fatalf("procMem = %d, %d, %v", rss, hwm, err)
	}
	if _, err := procCPU(-1); err == nil {
		t.Fatal("procCPU(-1) succeeded")
	}
}

func TestAllocatedBytesCountsHardLinksOnce(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i)
	}
	a := filepath.Join(dir, "a")
	if err := os.WriteFile(a, data, 0o644); err != nil {
		t.Fatal(err)
	}
	one := allocatedBytes(dir)
	if one < 1<<20 {
		t.Fatalf("1 MiB file allocates %d bytes", one)
	}
	if err := os.Link(a, filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if got := allocatedBytes(dir); got != one {
		t.Fatalf("with a hard link: %d bytes, want %d", got, one)
	}
}

func TestReceivedCounter(t *testing.T) {
	st := map[string]any{"snapshots": map[string]any{"received": 1.0, "saved": 3.0, "received_bytes": 4096.0}}
	if v, name := receivedCounter(st, ""); v != 4096 || name != "snapshots.received_bytes" {
		t.Fatalf("got %d %q", v, name)
	}
	if v, _ := receivedCounter(map[string]any{"snapshots": map[string]any{"received": 1.0}}, ""); v != 0 {
		t.Fatalf("a count was taken for bytes: %d", v)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestParseOptionsQuickDefaults(t *testing.T) {
	o, err := parseOptions([]string{"-quick", "-n", "7"})
	if err != nil {
		t.Fatal(err)
	}
	if o.N != 7 || len(o.Ks) != 1 || o.LargeMB != 0 || o.CatchUpKeys != 5000 || o.Out != "bench/results/quick" {
		t.Fatalf("quick options %+v", o)
	}
	for _, bad := range [][]string{{"-k", "0"}, {"-k", "x"}, {"-n", "0"}, {"-restart-runs", "99"}, {"-fill-value", "0"}} {
		if _, err := parseOptions(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
