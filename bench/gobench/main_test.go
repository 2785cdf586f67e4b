package main

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := `goos: linux
goarch: amd64
pkg: github.com/keel-db/keel/sm
cpu: AMD EPYC
BenchmarkCodec
BenchmarkCodec/encode/value=16-2         	  794252	       381.9 ns/op	  94.25 MB/s	      64 B/op	       1 allocs/op
BenchmarkUpdate/batch=16-2               	    3802	     68286 ns/op	  64.90 MB/s	    234307 entries/s	      4268 ns/entry	     571 B/op	       2 allocs/op
PASS
`
	out, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if out.GOOS != "linux" || out.CPU != "AMD EPYC" || len(out.Benchmarks) != 2 {
		t.Fatalf("parsed %+v", out)
	}
	b := out.Benchmarks[1]
	if b.Name != "BenchmarkUpdate/batch=16" || b.Procs != 2 || b.N != 3802 || b.Pkg != "github.com/keel-db/keel/sm" {
		t.Fatalf("result %+v", b)
	}
	if b.Metrics["entries/s"] != 234307 || b.Metrics["ns/op"] != 68286 || b.Metrics["allocs/op"] != 2 {
		t.Fatalf("metrics %v", b.Metrics)
	}
}

func TestParseMalformed(t *testing.T) {
	for _, line := range []string{
		"BenchmarkX-2 12 3.5 ns/op 7",       // odd field count
		"BenchmarkX-2 12 fast ns/op 1 B/op", // value not a number
	} {
		if _, err := parse(strings.NewReader(line + "\n")); !errors.Is(err, errMalformed) {
			t.Errorf("%q: err %v, want errMalformed", line, err)
		}
	}
}

// TestParseInterleaved joins a result whose figures follow log lines.
func TestParseInterleaved(t *testing.T) {
	in := "pkg: p\nBenchmarkS/keel/state=10MB-2   \t2026-11-25 22:53:15.19 I | INFO installed\n" +
		"2026-11-25 22:53:15.55 I | INFO installed\n" +
		"       5\t 422496803 ns/op\t  24.79 MB/s\t 1.021 stream/user-bytes\n"
	out, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Benchmarks) != 1 {
		t.Fatalf("parsed %+v", out.Benchmarks)
	}
	b := out.Benchmarks[0]
	if b.Name != "BenchmarkS/keel/state=10MB" || b.N != 5 || b.Metrics["MB/s"] != 24.79 || b.Metrics["stream/user-bytes"] != 1.021 {
		t.Fatalf("result %+v", b)
	}
}
