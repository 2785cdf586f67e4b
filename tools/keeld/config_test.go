package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/sm"
)

func TestParseFlagsDefaults(t *testing.T) {
	c, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		DataDir: "keel-data", HTTPAddr: "127.0.0.1:8080", RaftAddr: "127.0.0.1:63001",
		ShardID: 1, ReplicaID: 1, Members: map[uint64]string{1: "127.0.0.1:63001"}, LogLevel: slog.LevelWarn,
		SnapshotInterval: time.Minute, LogCompaction: true, ExportDir: "keel-data/exports",
		WriteBatch: defaultWriteBatch, GoMemoryLimitMiB: defaultGoMemoryLimitMiB, Security: securityConfig{MaxConns: defaultMaxConns},
		ClusterID:   "keel",
		DiskReserve: defaultDiskReserve, DiskBallast: defaultDiskBallast,
		Sharding: shardingConfig{Shards: 1, Placement: []placed{{ShardID: 1, ReplicaID: 1, Members: map[uint64]string{1: "127.0.0.1:63001"}}}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults\n got %+v\nwant %+v", c, want)
	}
	if c.RaftDir() != "keel-data/raft" || c.SMDir() != "keel-data/sm" {
		t.Fatalf("dirs %s %s", c.RaftDir(), c.SMDir())
	}
}

func TestParseFlagsMembers(t *testing.T) {
	c, err := parseFlags([]string{"--replica-id", "2", "--members", "1=127.0.0.1:1, 2=127.0.0.1:2,3=h:3", "--log-level", "DEBUG"})
	if err != nil {
		t.Fatal(err)
	}
	// --raft-addr comes from this replica's entry when not given.
	if c.RaftAddr != "127.0.0.1:2" || len(c.Members) != 3 || c.Members[3] != "h:3" || c.LogLevel != slog.LevelDebug {
		t.Fatalf("%+v", c)
	}
	if got := host.FormatMembers(c.Members); got != "1=127.0.0.1:1,2=127.0.0.1:2,3=h:3" {
		t.Fatalf("formatMembers = %q", got)
	}
	c, err = parseFlags([]string{"--replica-id", "4", "--raft-addr", "127.0.0.1:9", "--join"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Join || c.Members != nil {
		t.Fatalf("join: %+v", c)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-x"},
		{"--shard-id", "0"},
		{"--replica-id", "0"},
		{"--shard-id", "-3"},
		{"--data-dir", ""},
		{"--http", "8080"},
		{"--http", "127.0.0.1:99999"},
		{"--raft-addr", ":63001"},
		{"--raft-addr", "127.0.0.1:0"},
		{"--log-level", "trace"},
		{"--cluster-id", ""},
		{"--cluster-id", "a/b"},
		{"--cluster-id", strings.Repeat("x", host.MaxClusterNameLen+1)},
		{"--members", ""},
		{"--members", "1=127.0.0.1:1,"},
		{"--members", "1"},
		{"--members", "0=127.0.0.1:1"},
		{"--members", "x=127.0.0.1:1"},
		{"--members", "1=127.0.0.1:1,1=127.0.0.1:2"},
		{"--members", "1=127.0.0.1:1,2=127.0.0.1:1"},
		{"--members", "2=127.0.0.1:2"},
		{"--members", "1=127.0.0.1:1", "--raft-addr", "127.0.0.1:2"},
		{"--members", "1=127.0.0.1:1", "--join"},
		{"--snapshot-interval", "-1s"},
		{"--snapshot-interval", "5ms"},
		{"--snapshot-interval", "often"},
		{"--snapshot-entries", "-5"},
		{"--log-compaction=maybe"},
		{"--write-batch", "0"},
		{"--write-batch", "-1"},
		{"--write-batch", "1025"},
		{"--write-batch", "abc"},
		{"--go-memory-limit", "-1"},
		{"--go-memory-limit", "lots"},
		{"--snapshot-rate", "-1"},
		{"positional"},
	} {
		_, err := parseFlags(args)
		if args[0] == "--members" && args[1] == "" {
			// An empty --members means the default: just this replica.
			if err != nil {
				t.Errorf("%q: %v", args, err)
			}
			continue
		}
		if !errors.Is(err, errUsage) {
			t.Errorf("%q: err %v, want a usage error", args, err)
		}
	}
	if _, err := parseFlags([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

// TestSetMemoryLimit: the flag sets the runtime's limit; GOMEMLIMIT in the
// environment wins; 0 leaves it alone.
func TestSetMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Setenv("GOMEMLIMIT", "")
	setMemoryLimit(77, logger)
	if got := debug.SetMemoryLimit(-1); got != 77<<20 {
		t.Fatalf("limit %d after --go-memory-limit 77, want %d", got, 77<<20)
	}
	debug.SetMemoryLimit(orig)
	setMemoryLimit(0, logger)
	if got := debug.SetMemoryLimit(-1); got != orig {
		t.Fatalf("limit %d after --go-memory-limit 0, want it untouched (%d)", got, orig)
	}
	t.Setenv("GOMEMLIMIT", "500MiB")
	setMemoryLimit(77, logger)
	if got := debug.SetMemoryLimit(-1); got != orig {
		t.Fatalf("limit %d with GOMEMLIMIT set, want it untouched (%d)", got, orig)
	}
}

func TestParseFlagsWriteBatch(t *testing.T) {
	if defaultWriteBatch != 1 {
		t.Fatalf("default --write-batch %d, want 1 (off: bench/README.md)", defaultWriteBatch)
	}
	for _, n := range []int{1, 2, 256, sm.MaxTxnItems} {
		c, err := parseFlags([]string{"--write-batch", fmt.Sprint(n)})
		if err != nil || c.WriteBatch != n {
			t.Errorf("--write-batch %d: %d, %v", n, c.WriteBatch, err)
		}
	}
	// The message names the flag and its bounds.
	_, err := parseFlags([]string{"--write-batch", "1025"})
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--write-batch 1025 must be from 1 to 1024") {
		t.Fatalf("--write-batch 1025: %v", err)
	}
}

func TestStatusFor(t *testing.T) {
	// Every error keeld writes maps to a deliberate class, never a panic.
	for _, c := range []struct {
		err  error
		want int
	}{
		{errBadRequest, 400}, {errTooLarge, 413}, {errNotFound, 404},
		{errors.New("disk on fire"), 500},
	} {
		if got := statusFor(c.err); got != c.want {
			t.Errorf("statusFor(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestDemoteRoutine(t *testing.T) {
	var buf bytes.Buffer
	base := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})
	l := slog.New(demoteRoutine(base))
	l.Warn("t2 became candidate", "pkg", "raft")
	l.With("pkg", "config").Warn("mutual TLS disabled")
	l.Warn("StaleRead called, linearizability not guaranteed", "pkg", "dragonboat")
	if buf.Len() != 0 {
		t.Fatalf("routine warnings were logged at warn: %s", buf.String())
	}
	l.Warn("failed to connect", "pkg", "transport")
	l.With("pkg", "raft").Error("real trouble")
	if got := strings.Count(buf.String(), "\n"); got != 2 {
		t.Fatalf("want the transport warning and the raft error, got %q", buf.String())
	}
}

func TestParseShardingFlags(t *testing.T) {
	c, err := parseFlags([]string{"--shards", "4", "--replica-id", "2", "--members", "1=127.0.0.1:1,2=127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sharding.Placement) != 4 || c.Sharding.Placement[3].ShardID != 4 || c.Sharding.Placement[3].ReplicaID != 2 {
		t.Fatalf("placement %+v", c.Sharding.Placement)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--shards", "0"}, "--shards 0 must be from 1"},
		{[]string{"--shards", "4", "--shard-id", "3"}, "--shard-id goes with --shards 1 only"},
		{[]string{"--shard-map", "/nonexistent/map.json"}, "--shard-map"},
		{[]string{"--shard-map", "x.json", "--members", "1=127.0.0.1:1"}, "--shard-map replaces --members"},
	} {
		_, err := parseFlags(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// The Raft tick follows the cluster's shard count unless --rtt-ms sets it.
func TestRTTFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want uint64
	}{
		{nil, 20},
		{[]string{"--shards", "1000"}, 200},
		{[]string{"--shards", "1000", "--rtt-ms", "30"}, 30},
		{[]string{"--rtt-ms", "200"}, 200},
	} {
		cfg, err := parseFlags(c.args)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := cfg.rtt(); got != c.want {
			t.Errorf("%v: tick %d ms, want %d", c.args, got, c.want)
		}
	}
	if _, err := parseFlags([]string{"--rtt-ms", "20000"}); err == nil {
		t.Error("--rtt-ms 20000 accepted")
	}
}

// Many replicas raise the default Go memory limit; an explicit one stays.
func TestGoMemoryLimitScalesWithShards(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int64
	}{
		{nil, defaultGoMemoryLimitMiB},
		{[]string{"--shards", "1000"}, defaultGoMemoryLimitMiB + 999*goMemoryMiBPerShard},
		{[]string{"--shards", "1000", "--go-memory-limit", "64"}, 64},
	} {
		cfg, err := parseFlags(c.args)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if cfg.GoMemoryLimitMiB != c.want {
			t.Errorf("%v: limit %d MiB, want %d", c.args, cfg.GoMemoryLimitMiB, c.want)
		}
	}
}
