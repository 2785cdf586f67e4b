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
