package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/sm"
)

// config is keeld's parsed command line.
//
// Invariants after parseFlags: ShardID and ReplicaID are non-zero;
// RaftAddr is host:port with a port in 1..65535; when Join is false Members
// holds this replica at RaftAddr; when Join is true Members is empty.
type config struct {
	DataDir   string
	HTTPAddr  string
	RaftAddr  string
	ShardID   uint64
	ReplicaID uint64
	// Members are the initial members, replica ID to Raft address. Dragonboat
	// reads them only when the replica bootstraps; keeld ignores them once
	// the data directory holds a bootstrapped replica.
	Members  map[uint64]string
	Join     bool
	LogLevel slog.Level
	// SnapshotInterval is the snapshot timer's period (0 disables it);
	// SnapshotEntries Dragonboat's entry-count trigger (0 disables it).
	SnapshotInterval time.Duration
	SnapshotEntries  uint64
	// LogCompaction runs logcompact's Compactor for the replica.
	LogCompaction bool
	// SMPlugin, when set, is a Keel storage plugin (.so) to load instead of
	// the linked-in state machine.
	SMPlugin string
	// ExportDir is where POST /admin/export writes exported snapshots.
	ExportDir string
	// LogKeepEntries is the Raft log window the compactor keeps (0: Keel's
	// default, logcompact.DefaultKeepEntries). A follower further behind
	// catches up by a snapshot stream.
	LogKeepEntries uint64
	// WriteBatch is the most single-key writes (PUT and DELETE /kv) that
	// leave in one Raft proposal (client.Batcher); 1 proposes each alone.
	WriteBatch int
	// SnapshotRateMiB caps snapshot streams and exports, MiB/s (0: none).
	SnapshotRateMiB int64
	// GoMemoryLimitMiB is the Go runtime's soft memory limit
	// (debug.SetMemoryLimit), 0 for none; GOMEMLIMIT in the environment
	// wins over it.
	GoMemoryLimitMiB int64
	// Security holds TLS, token and connection-limit settings (security.go).
	Security securityConfig
	// Quiesce lets idle shards stop heartbeating (Dragonboat's Quiesce).
	Quiesce bool
	// RTTMillis is the NodeHost's tick (--rtt-ms); 0 means
	// host.RTTForShards of the cluster's shard count (rtt).
	RTTMillis uint64
	// Sharding holds --shards and --shard-map and the replicas this
	// process runs (placement.go). ShardID and ReplicaID name the first of
	// them, the one the single-shard endpoints and top-level /status fields
	// describe.
	Sharding shardingConfig
	// ClusterID names the cluster; its hash is Dragonboat's deployment ID
	// (cluster.go).
	ClusterID string
	// DiskReserve and DiskBallast size the disk guard (diskguard.go).
	DiskReserve, DiskBallast diskSize
}

// Defaults for a single-replica cluster on loopback.
const (
	defaultDataDir  = "keel-data"
	defaultHTTPAddr = "127.0.0.1:8080"
	defaultRaftAddr = "127.0.0.1:63001"
	// defaultSnapshotInterval bounds how much of the log a restart replays
	// and how long unsynced applied state waits for an fsync, at the cost of
	// one metadata-only snapshot (a Sync and ~1 KB) a minute.
	defaultSnapshotInterval = time.Minute
	// defaultWriteBatch 1 leaves group commit off: over HTTP it measured
	// no faster than Dragonboat's own batching of concurrent proposals,
	// and slower at K=16, because it caps proposals in flight
	// (bench/README.md). 256 is the value to try under heavy load.
	defaultWriteBatch = 1
	// defaultGoMemoryLimitMiB keeps a replica inside Keel's 200 MiB RSS
	// budget: while filling 1 GB with 64 KiB values the Go heap grew to
	// twice its live size (GOGC 100) and peak RSS was 225-229 MiB; with
	// this limit 189-195 MiB at the same fill rate (bench/README.md).
	// Pebble's block cache and memtables (about 50 MiB) are outside it.
	defaultGoMemoryLimitMiB = host.GoMemoryLimitMiB
	// goMemoryMiBPerShard is added to the default limit for every replica
	// past the first: Go heap in use at 1,000 idle shards was 1.1 GiB
	// with Dragonboat's no-op state machine (its per-shard queues, mostly
	// never touched, so RSS stays far lower) and 1.4 GiB with Keel. Under
	// a 96 MiB limit the runtime collected without pause: one keeld with
	// --shards 1000 spent 56% of a core idle in GC (bench/README.md).
	goMemoryMiBPerShard = host.GoMemoryMiBPerShard
)

// rtt is the NodeHost tick: --rtt-ms, or Keel's rule for the cluster's
// shard count, which every process of a cluster computes alike.
func (c config) rtt() uint64 {
	if c.RTTMillis > 0 {
		return c.RTTMillis
	}
	return host.RTTForShards(int(c.Sharding.Shards))
}

// RaftDir holds Dragonboat's NodeHost directory (Raft log and metadata).
func (c config) RaftDir() string { return filepath.Join(c.DataDir, "raft") }

// SMDir is the Keel state machine root (host.Config.RootDir).
func (c config) SMDir() string { return filepath.Join(c.DataDir, "sm") }

func newFlagSet(c *config, members, logLevel *string) *flag.FlagSet {
	fs := flag.NewFlagSet("keeld", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir, "data directory: Raft log in <dir>/raft, state machine in <dir>/sm")
	fs.StringVar(&c.HTTPAddr, "http", defaultHTTPAddr, "HTTP listen address")
	fs.StringVar(&c.RaftAddr, "raft-addr", defaultRaftAddr, "Raft address this replica listens on and is known by")
	fs.Uint64Var(&c.ShardID, "shard-id", 1, "Raft shard ID")
	fs.Uint64Var(&c.ReplicaID, "replica-id", 1, "Raft replica ID of this process")
	fs.StringVar(members, "members", "", `initial members "1=host:port,2=host:port,..." (default: this replica at --raft-addr)`)
	fs.BoolVar(&c.Join, "join", false, "start as a new member joining an existing shard (add it first: POST /admin/members/{id})")
	fs.StringVar(logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	fs.DurationVar(&c.SnapshotInterval, "snapshot-interval", defaultSnapshotInterval, "period of the snapshot timer (jittered; 0 disables it)")
	fs.Uint64Var(&c.SnapshotEntries, "snapshot-entries", 0, "also snapshot every N applied entries (0 disables the entry-count trigger)")
	fs.BoolVar(&c.LogCompaction, "log-compaction", true, "compact the Raft log behind snapshots and reclaim its disk space")
	fs.StringVar(&c.SMPlugin, "sm-plugin", "", "load the state machine from this Keel storage plugin (.so) instead of the linked-in one")
	fs.StringVar(&c.ExportDir, "export-dir", "", "directory POST /admin/export writes to (default <data-dir>/exports)")
	fs.Uint64Var(&c.LogKeepEntries, "log-keep-entries", 0, "Raft entries the log compactor keeps behind the last snapshot (0: Keel's default, 50000); followers further behind get a snapshot")
	fs.Int64Var(&c.GoMemoryLimitMiB, "go-memory-limit", defaultGoMemoryLimitMiB, "soft limit on the Go heap, MiB (0: none; GOMEMLIMIT overrides it); Pebble's caches are outside it. Default 96, plus 2 per replica past the first")
	fs.Int64Var(&c.SnapshotRateMiB, "snapshot-rate", 0, "cap on how fast this replica streams a snapshot to a follower or exports one, MiB/s (0: no cap)")
	fs.IntVar(&c.WriteBatch, "write-batch", defaultWriteBatch, fmt.Sprintf("most concurrent PUT/DELETE /kv writes sent in one Raft proposal (group commit, e.g. 256; 1, the default, turns it off; at most %d)", sm.MaxTxnItems))
	c.DiskReserve, c.DiskBallast = defaultDiskReserve, defaultDiskBallast
	fs.Var(&c.DiskReserve, "disk-reserve", "refuse writes (507) while the data directory's filesystem has less free space than this: bytes (256MiB, 1GiB) or a share of it (5%); 0 turns the reserve off")
	fs.Var(&c.DiskBallast, "disk-ballast", "space held in <data-dir>/ballast and given back when the disk fills, so Raft and Pebble can finish their writes; bytes or a share of the filesystem; 0 for none")
	addSecurityFlags(fs, &c.Security)
	addClusterFlag(fs, &c.ClusterID)
	addShardingFlags(fs, &c.Sharding)
	fs.Uint64Var(&c.RTTMillis, "rtt-ms", 0, "Raft tick in ms (Dragonboat's RTTMillisecond; elections take 10-20 ticks, request deadlines must exceed one); 0: 20 ms up to 100 shards, then shards/5 ms, at most 1000 (idle CPU grows with shards per tick). Give every process of a cluster the same value")
	fs.BoolVar(&c.Quiesce, "quiesce", false, "let idle shards stop heartbeating (for many mostly idle shards; a replica joining an idle shard, or a shard that opened slowly, waits for a read or message to wake it: Dragonboat's experimental Quiesce)")
	return fs
}

// usage returns the help text printed for -h.
func usage() string {
	var c config
	var m, l string
	fs := newFlagSet(&c, &m, &l)
	var b strings.Builder
	b.WriteString("Usage: keeld [flags]\n\nkeeld serves one replica of a Keel shard over HTTP.\n\nFlags:\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

// parseFlags parses and validates keeld's arguments. Every error wraps
// errUsage and is one line; -h and --help return flag.ErrHelp.
func parseFlags(args []string) (config, error) {
	var c config
	var members, logLevel string
	fs := newFlagSet(&c, &members, &logLevel)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return c, err
		}
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if c.DataDir == "" {
		return c, fmt.Errorf("%w: --data-dir is empty", errUsage)
	}
	if c.RTTMillis > host.MaxRTTMillisecond*10 {
		return c, fmt.Errorf("%w: --rtt-ms %d is over %d", errUsage, c.RTTMillis, host.MaxRTTMillisecond*10)
	}
	if c.SnapshotInterval < 0 {
		return c, fmt.Errorf("%w: --snapshot-interval must not be negative", errUsage)
	}
	if c.GoMemoryLimitMiB < 0 || c.GoMemoryLimitMiB > 1<<30 {
		return c, fmt.Errorf("%w: --go-memory-limit %d must be from 0 to %d MiB", errUsage, c.GoMemoryLimitMiB, 1<<30)
	}
	if c.SnapshotRateMiB < 0 || c.SnapshotRateMiB > 1<<20 {
		return c, fmt.Errorf("%w: --snapshot-rate %d must be from 0 to %d MiB/s", errUsage, c.SnapshotRateMiB, 1<<20)
	}
	if c.WriteBatch < 1 || c.WriteBatch > sm.MaxTxnItems {
		return c, fmt.Errorf("%w: --write-batch %d must be from 1 to %d", errUsage, c.WriteBatch, sm.MaxTxnItems)
	}
	if c.SnapshotInterval > 0 && c.SnapshotInterval < 100*time.Millisecond {
		return c, fmt.Errorf("%w: --snapshot-interval %v is below the 100ms minimum", errUsage, c.SnapshotInterval)
	}
	if c.ExportDir == "" {
		c.ExportDir = filepath.Join(c.DataDir, "exports")
	}
	if err := c.Security.check(); err != nil {
		return c, err
	}
	if err := checkClusterFlag(c.ClusterID); err != nil {
		return c, err
	}
	if c.ShardID == 0 {
		return c, fmt.Errorf("%w: --shard-id must be above 0", errUsage)
	}
	if c.ReplicaID == 0 {
		return c, fmt.Errorf("%w: --replica-id must be above 0", errUsage)
	}
	if err := host.CheckHostPort(c.HTTPAddr, true); err != nil {
		return c, fmt.Errorf("%w: --http: %v", errUsage, err)
	}
	lvl, err := parseLogLevel(logLevel)
	if err != nil {
		return c, fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	c.LogLevel = lvl

	if members != "" {
		if c.Join {
			return c, fmt.Errorf("%w: --join and --members exclude each other: a joining replica learns the members from the shard", errUsage)
		}
		m, err := host.ParseMembers(members)
		if err != nil {
			return c, fmt.Errorf("%w: --members: %v", errUsage, err)
		}
		self, ok := m[c.ReplicaID]
		if !ok {
			return c, fmt.Errorf("%w: --members does not list this replica (--replica-id %d)", errUsage, c.ReplicaID)
		}
		if !set["raft-addr"] {
			c.RaftAddr = self
		} else if self != c.RaftAddr {
			return c, fmt.Errorf("%w: --members lists replica %d at %s but --raft-addr is %s", errUsage, c.ReplicaID, self, c.RaftAddr)
		}
		c.Members = m
	}
	if err := host.CheckHostPort(c.RaftAddr, false); err != nil {
		return c, fmt.Errorf("%w: --raft-addr: %v", errUsage, err)
	}
	if !c.Join && c.Members == nil && c.Sharding.ShardMapFile == "" {
		c.Members = map[uint64]string{c.ReplicaID: c.RaftAddr}
	}
	if err := c.resolvePlacement(set); err != nil {
		return c, err
	}
	if !set["go-memory-limit"] && len(c.Sharding.Placement) > 1 {
		c.GoMemoryLimitMiB += goMemoryMiBPerShard * int64(len(c.Sharding.Placement)-1)
	}
	return c, nil
}

func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
	}
}
