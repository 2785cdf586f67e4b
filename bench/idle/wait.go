//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// pollInterval is how often the waits look again.
const pollInterval = time.Second

var hc = &http.Client{Timeout: 30 * time.Second}

// shardCounts is what one /metrics scrape says about every shard.
type shardCounts struct {
	leaderKnown map[string]bool // shards with keel_leader_known 1
	timerRan    int             // shards whose snapshot timer has run at least once
}

// scrape reads n's /metrics. It reads replicas locally (no linearizable
// read), so it does not wake a quiesced shard.
func scrape(ctx context.Context, n *node) (shardCounts, error) {
	c := shardCounts{leaderKnown: map[string]bool{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.httpAddr+"/metrics", nil)
	if err != nil {
		return c, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("%w: /metrics of replica %d: %d", errProbe, n.id, resp.StatusCode)
	}
	ran := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || v < 1 {
			continue
		}
		switch name {
		case "keel_leader_known":
			c.leaderKnown[label(labels, "shard")] = true
		case "keel_snapshots_total":
			if strings.Contains(labels, `kind="timer_`) {
				ran[label(labels, "shard")] = true
			}
		}
	}
	c.timerRan = len(ran)
	return c, sc.Err()
}

// label returns the value of name in a Prometheus label list.
func label(labels, name string) string {
	for _, kv := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// waitAll polls every process's /metrics until done holds for the three
// answers.
func (t *trio) waitAll(ctx context.Context, what string, timeout time.Duration, done func([]shardCounts) bool) error {
	deadline := time.Now().Add(timeout)
	var got []shardCounts
	defer func() {
		if len(got) > 0 {
			logf("%s: leaders known for %d shards, first snapshot timers run for %d", what, leadersKnown(got), timersRan(got))
		}
	}()
	for {
		if err := t.alive(); err != nil {
			return err
		}
		got = got[:0]
		for _, n := range t.nodes {
			c, err := scrape(ctx, n)
			if err != nil {
				break // not serving yet
			}
			got = append(got, c)
		}
		if len(got) == len(t.nodes) && done(got) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s after %s", errTimeout, what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// leadersKnown counts the shards whose leader at least one process knows.
// Not all three: a follower that missed the election of a shard that then
// quiesced learns the leader only when the shard wakes.
func leadersKnown(cs []shardCounts) int {
	all := map[string]bool{}
	for _, c := range cs {
		for s := range c.leaderKnown {
			all[s] = true
		}
	}
	return len(all)
}

// timersRan is the fewest shards whose snapshot timer has run on any one
// process.
func timersRan(cs []shardCounts) int {
	n := -1
	for _, c := range cs {
		if n < 0 || c.timerRan < n {
			n = c.timerRan
		}
	}
	return n
}

// raftConns maps each established TCP connection of the three Raft
// listeners (local and peer address) to its bytes_received: every Raft
// message a process receives.
func (t *trio) raftConns() (map[string]uint64, error) {
	var ports []string
	for _, n := range t.nodes {
		_, p, err := net.SplitHostPort(n.raftAddr)
		if err != nil {
			return nil, err
		}
		ports = append(ports, "sport = :"+p)
	}
	filter := "( " + strings.Join(ports, " or ") + " )"
	out, err := exec.Command("ss", "-tinH", "state", "established", filter).Output()
	if err != nil {
		return nil, fmt.Errorf("%w: ss: %v", errProbe, err)
	}
	return parseSS(string(out))
}

// parseSS reads `ss -tinH` output: a line "Recv-Q Send-Q Local Peer" per
// connection, then an indented line of its TCP info.
func parseSS(out string) (map[string]uint64, error) {
	conns := map[string]uint64{}
	key := ""
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && !strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, " ") {
			// Recv-Q Send-Q Local Peer: a connection's first line.
			key = f[2] + ">" + f[3]
			continue
		}
		for _, w := range f {
			if v, ok := strings.CutPrefix(w, "bytes_received:"); ok {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("%w: ss: %q", errProbe, w)
				}
				conns[key] += n
			}
		}
	}
	return conns, nil
}

// raftBytesSince returns the bytes received on the connections of now
// since before: a connection opened meanwhile counts from zero, one closed
// meanwhile is not counted.
func raftBytesSince(before, now map[string]uint64) uint64 {
	var sum uint64
	for k, v := range now {
		if b := before[k]; v >= b {
			sum += v - b
		}
	}
	return sum
}

// waitQuiet waits until no Raft byte arrived for quiet.
func (t *trio) waitQuiet(ctx context.Context, quiet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	prev, err := t.raftConns()
	if err != nil {
		return err
	}
	since := time.Now()
	for {
		if err := t.alive(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(quiet / 4):
		}
		cur, err := t.raftConns()
		if err != nil {
			return err
		}
		if raftBytesSince(prev, cur) > 0 || len(cur) != len(prev) {
			prev, since = cur, time.Now()
		} else if time.Since(since) >= quiet {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: Raft traffic still flowing after %s", errTimeout, timeout)
		}
	}
}
