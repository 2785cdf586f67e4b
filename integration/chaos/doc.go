// Package chaos is Keel's end-to-end fault test: three real keeld processes
// on 127.0.0.1, each hosting a replica of every shard (--shards 4 unless
// CHAOS_SHARDS says otherwise), concurrent clients recording a full
// history, and a nemesis that SIGKILLs, restarts, SIGSTOPs and SIGCONTs
// replicas on a schedule drawn from a printed seed. The package holds only
// tests; this file documents them.
//
// # Shards
//
// The clients' keys are chosen with keeld's key-to-shard rule (FNV-1a-64
// of the key or its {hash tag}, tools/keeld/shardmap.go) so every shard
// holds the same number of them. The leader faults hit the leader of a
// random shard; the compaction and snapshot-stream faults watch shard 1
// (the top-level /status fields), and the nemesis's own writes then go to
// shard 1's keys. The monitor's counters in the summary are shard 1's.
//
// # What is checked
//
//   - Linearizability of the whole history with porcupine, partitioned by
//     key. Every operation is single-key (put, get, delete, and txns whose
//     one precondition and one operation name the same key), so the
//     partition is exact. A write whose outcome the client could not learn
//     (timeout, 503, connection lost after sending) is "unknown": it is
//     given an infinite return time and any output, so porcupine may place
//     it anywhere after its call, including "never".
//   - Durability of acknowledged writes: keys under "ack/" are written once
//     each; every acknowledged one must be on every replica at the end.
//   - Convergence: after the faults stop and one last write to every shard,
//     all replicas of each shard reach the same applied index; they are
//     stopped (the one leading the fewest shards first) and, for every
//     shard, `keelctl hash --json --shard N` must give the same StateHash,
//     key count and applied index on every replica, the shard must hold
//     keys, and `keelctl check --shard N` must pass. An election after a
//     stop appends only a no-op entry, which Dragonboat does not pass to
//     the state machine, so the stop order cannot make applied indexes
//     differ.
//
// # Running
//
// TestChaos is a normal test (about two minutes) and runs in `make test`.
// Environment variables tune it; `make chaos` passes them through:
//
//	CHAOS_DURATION  workload duration (Go duration, default 90s)
//	CHAOS_SHARDS    keeld's --shards (default 4; 1 to 8)
//	CHAOS_SEED      fault and workload seed (default: random, printed)
//	CHAOS_OUT       directory for the run's summary.json, history, logs and,
//	                on failure, porcupine's HTML visualisation (default: a
//	                temporary directory kept only when the test fails)
//
// # On disk
//
// Per run, in the output directory: summary.json, history.jsonl (one line
// per operation: client, kind, key, value, call and return times in ns since
// the start, outcome), replica-N.log (each incarnation's stderr, appended),
// faults.log, and linearizability.html when the check fails.
//
// # Concurrency
//
// Client goroutines each own their operations and append finished records
// to the shared history under its mutex. The nemesis is one goroutine; it
// alone signals processes, through the cluster type, whose mutex guards
// each replica's process state so clients can pick a live target.
package chaos
