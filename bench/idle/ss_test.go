//go:build linux

package main

import "testing"

func TestParseSS(t *testing.T) {
	out := "0      0      127.0.0.1:27103 127.0.0.1:39394\n" +
		"\t bbr wscale:10,10 rto:200 bytes_received:2288090 segs_out:1809\n" +
		"0      0      127.0.0.1:27102 127.0.0.1:47890\n" +
		"\t bbr wscale:10,10 rto:200 bytes_acked:1 bytes_received:15 segs_in:2\n"
	got, err := parseSS(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["127.0.0.1:27103>127.0.0.1:39394"] != 2288090 || got["127.0.0.1:27102>127.0.0.1:47890"] != 15 {
		t.Fatalf("parsed %v", got)
	}
	// A connection gone since before is not counted; a new one counts
	// from zero; no underflow.
	before := map[string]uint64{"old": 100, "127.0.0.1:27102>127.0.0.1:47890": 10}
	if n := raftBytesSince(before, got); n != 2288090+5 {
		t.Fatalf("since: %d", n)
	}
	if _, err := parseSS("0 0 a b\n\t bytes_received:x\n"); err == nil {
		t.Fatal("a bad number parsed")
	}
}
