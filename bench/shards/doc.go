// Command shards is Keel's many-shards benchmark: what one NodeHost running
// N single-replica shards costs with Keel's state machine, against
// Dragonboat's in-memory no-op state machine at the same N on the same
// NodeHost and Raft settings (host.NodeHostConfig, host.ShardConfig with
// Quiesce turned on, as keeld does for many shards). `make bench-shards` and `make bench-quick` run it; by
// hand:
//
//	go run ./bench/shards -out bench/results                # 1, 10, 100, 1000 shards
//	go run ./bench/shards -quick                            # 1 and 10, into bench/results/quick
//	go run ./bench/shards -replot bench/results/shards.json # charts only
//	go run ./bench/shards -shards 1000 -phases steady -kinds noop,keel -rtt-ms 100
//
// The NodeHost's tick (Dragonboat's RTTMillisecond) is the same for every
// kind: by default host.RTTForShards of the shard count, as keeld sets it
// (20 ms up to 100 shards, 200 ms at 1,000), or -rtt-ms for all counts. It
// is set through host.Options.Configure, so the harness also builds
// against older Keel trees for an A/B. Each child also sets keeld's Go
// memory limit for its shard count (host.GoMemoryLimitForShards: 2,094
// MiB at 1,000), every kind alike; -go-memory-limit none runs without one,
// as a host embedding Keel does unless it sets one (GOMEMLIMIT overrides
// both). Without it the load phase's RSS is mostly Go garbage waiting
// for a collection (bench/README.md). -settle defaults to 1.5x the
// quiesce threshold (100 ticks) when that is longer than 4 s. -phases runs
// a subset of the phases below (restart needs steady).
//
// # Kinds
//
// noop (the baseline: an IStateMachine started with NodeHost.StartReplica
// that applies nothing), keel (host.Host with Keel's defaults: WAL-less
// Pebble tablets on one engine.Shared), keel-wal (the same with
// engine.Options.WAL, every tablet keeping Pebble's WAL). Every kind gets
// the same Raft entries: Keel's put command, proposed with SyncPropose and
// a no-op session.
//
// # Phases
//
// Each runs in a fresh child process (the program re-executes itself with
// -child PHASE and prints one JSON line), so memory and open files belong
// to one kind at one shard count. For each shard count the kinds take turns
// within each phase, starting with a different kind at each count:
//
//   - steady: start every shard fresh, write 20 keys of 16 B with 256 B
//     values to each, wait -settle (longer than Dragonboat's quiesce
//     threshold, 10 election timeouts: 2 s), then VmRSS after
//     debug.FreeOSMemory, open files (/proc/self/fd, sorted by what each
//     points at), allocated bytes of DIR/raft and DIR/sm
//     (logcompact.AllocatedBytes) while open and after Close, and CPU
//     (utime+stime of /proc/self/stat) over -idle with every shard idle.
//   - restart: on what steady left, open the host, start every replica
//     with no member list, and time until a linearizable read of a key
//     written in steady returns its value on every shard; -restart-runs
//     times, the first in the fresh process.
//   - load: on a fresh directory, one writer per shard for -load; VmRSS
//     and engine.Shared's memtable counters sampled every 100 ms. At the
//     RSS peak, the Go heap's live size, goal and objects (load.at_peak,
//     from runtime/metrics); over the window, bytes allocated and GC
//     cycles; with -profile, a CPU profile of the window and a heap
//     profile at its end.
//
// # Output
//
// <out>/shards.json holds every child's result (rows), each Keel kind next
// to the baseline at its shard count (comparisons), and the targets
// for kind keel at the largest shard count, with pass/miss (reported, never
// asserted). <out>/shards-*.png are charts against shard count.
//
// # Processes and cleanup
//
// Children start with Pdeathsig SIGKILL and are killed at -child-limit;
// the parent removes every state directory as it goes and its temporary
// root on return. Every loop is bounded in count and time. Network traffic
// is only each NodeHost's own Raft address on 127.0.0.1.
//
// Linux only: memory, CPU time and open files come from /proc.
package main
