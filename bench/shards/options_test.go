//go:build linux

package main

import (
	"testing"
	"time"
)

// The tick follows each shard count unless -rtt-ms sets it, and -settle
// outlasts the quiesce threshold at that tick unless it is given.
func TestRTTAndSettle(t *testing.T) {
	o, err := parseOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		shards int
		rtt    int
		settle time.Duration
	}{{1, 20, 4 * time.Second}, {100, 20, 4 * time.Second}, {1000, 200, 30 * time.Second}} {
		if got := o.rtt(c.shards); got != c.rtt {
			t.Errorf("%d shards: tick %d ms, want %d", c.shards, got, c.rtt)
		}
		if got := o.childSettle(c.shards); got != c.settle {
			t.Errorf("%d shards: settle %v, want %v", c.shards, got, c.settle)
		}
	}
	o, err = parseOptions([]string{"-rtt-ms", "50", "-settle", "1s"})
	if err != nil {
		t.Fatal(err)
	}
	if o.rtt(1000) != 50 || o.childSettle(1000) != time.Second {
		t.Errorf("explicit: tick %d ms, settle %v", o.rtt(1000), o.childSettle(1000))
	}
	if _, err := parseOptions([]string{"-rtt-ms", "-1"}); err == nil {
		t.Error("-rtt-ms -1 accepted")
	}
}

// Every child gets keeld's Go memory limit for its shard count unless
// -go-memory-limit says otherwise, and a child parses what the parent
// passes it.
func TestGoMemoryLimit(t *testing.T) {
	o, err := parseOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.goMemoryLimit(1000); got != 2094 {
		t.Errorf("default at 1,000 shards: %d MiB, want keeld's 2094", got)
	}
	if got := o.goMemoryLimit(1); got != 96 {
		t.Errorf("default at 1 shard: %d MiB, want 96", got)
	}
	c, err := parseOptions([]string{"-child", "load", "-kind", "keel", "-n", "1000", "-dir", "d", "-addr", "a",
		"-go-memory-limit", o.childMemLimitArg(1000)})
	if err != nil || c.child.GoMemoryLimit != 2094 {
		t.Errorf("child: limit %d, %v", c.child.GoMemoryLimit, err)
	}
	for arg, want := range map[string]int64{"none": 0, "300": 300} {
		o, err := parseOptions([]string{"-go-memory-limit", arg})
		if err != nil || o.goMemoryLimit(1000) != want || (want == 0 && o.childMemLimitArg(1000) != "none") {
			t.Errorf("-go-memory-limit %s: %d, %v", arg, o.goMemoryLimit(1000), err)
		}
	}
	if _, err := parseOptions([]string{"-go-memory-limit", "lots"}); err == nil {
		t.Error("-go-memory-limit lots accepted")
	}
}
