// Package chaos is Keel's end-to-end fault test: three real keeld processes
// on 127.0.0.1, concurrent clients recording a full history, and a nemesis
// that SIGKILLs, restarts, SIGSTOPs and SIGCONTs replicas on a schedule drawn
// from a printed seed. The package holds only tests; this file documents
// them.
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
//   - Convergence: after the faults stop, all replicas reach the same
//     applied index; they are stopped (followers first, so no new leader
//     appends an entry) and `keelctl hash --json` must give the same
//     StateHash and applied index for each, and `keelctl check` must pass.
//
// # Running
//
// TestChaos is a normal test (about two minutes) and runs in `make test`.
// Environment variables tune it; `make chaos` passes them through:
//
//	CHAOS_DURATION  workload duration (Go duration, default 90s)
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
