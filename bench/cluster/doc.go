// Command cluster is Keel's cluster benchmark: it starts three keeld
// processes on 127.0.0.1, drives them over HTTP and writes what it measured
// as JSON and PNG charts. `make bench` and `make bench-quick` run it; by
// hand:
//
//	go run ./bench/cluster -out bench/results            # full run
//	go run ./bench/cluster -quick -out bench/results/quick
//	go run ./bench/cluster -replot bench/results/cluster.json   # charts only
//
// -quick shrinks every phase and starts keeld with --log-keep-entries 2000,
// so a stopped follower falls behind the compacted log after a few
// thousand writes.
//
// # Phases
//
// limits (the machine: fdatasync'd 4 KiB appends/s, sequential write MiB/s,
// hard links/s, all on the filesystem holding the replicas), write (N puts
// of 16-byte keys and 256-byte values with K concurrent clients, once per
// K, each on a fresh cluster), snapshot-under-load (a stopped follower,
// left behind the leader's compacted log, restarts while K clients write;
// latency is compared with the write phase at the same K), catch-up (the
// same with an idle leader: time and bytes to install the state), restart
// (stop all three, start them, time to the first linearizable GET, at a
// small and a large state), and a sampler that records each replica's
// allocated bytes under DIR/raft and DIR/sm and its resident memory every
// half second throughout. Under DIR/raft, Dragonboat's snapshot-part-*
// directories (a received snapshot stream, staged before install) are
// counted apart from the Raft log.
//
// # Many shards
//
// With --shards N in -keeld-args every process hosts a replica of each
// shard, and the phases wait for all of them (shards.go, catchup.go,
// restart.go): catch-up stops the process leading the fewest shards,
// writes until every shard's leader has compacted its log past it (each
// round m keys per shard, -catchup-keys, then a snapshot of every shard),
// restarts it and times until every shard on it has applied its leader's
// index; it fails unless every shard installed a snapshot. Restart times
// until every shard answers a linearizable GET (one probe key per shard,
// by keeld's key rule), after restarting all three processes or one.
//
// # A/B runs
//
// -keeld-base PATH runs the write phase for the candidate keeld (-keeld, or
// the one built) and the baseline alternately, -rounds times (A,B then
// B,A), and reports each figure's ratio candidate/baseline (ab.go). -rate
// paces the puts so both builds see the same load.
//
// -shards-list 1,4,16 runs, for each count N, keeld with --shards N: the
// write runs at every -k, then per binary and round a recovery run on a
// fresh cluster (fill -restart-small-mb, catch-up of one process, restart
// of one process and of all three), candidate and baseline alternating
// when -keeld-base is given; shards_rows in the JSON holds each N's
// medians and ratios (matrix.go). `make bench-cluster-shards` runs it
// against a keeld built from BASE_REF (default main), and `make
// bench-cluster-catchup` runs its catch-up alone at 500 MB. Each catch-up's
// fraction of the disk is taken against the larger of the limits phase's
// sequential-write probe and one made right after it (probeAfterCatchUp).
// KEEL_BENCH_KEEP_LOGS=DIR copies each recovery run's keeld logs there
// before its directory goes (with -keeld-args '--log-level debug', the
// timeline of a catch-up).
//
// # Load client
//
// Writers use rawConn (rawhttp.go): one hand-written HTTP/1.1 keep-alive
// connection each, about half net/http's client CPU per put; -client std
// selects net/http. Writer w sends to replica w mod 3 (-target all), or
// everything to the leader (-target leader).
//
// # Output
//
// <out>/cluster.json holds every phase (see report.go for the schema),
// targets with pass/miss (never asserted: the exit status says only whether
// the harness worked), and the host. <out>/*.png are the charts.
//
// # Processes and cleanup
//
// keeld is built once (or taken from -keeld). Every process is started with
// Pdeathsig SIGKILL and tracked by the fleet; on return, error or SIGINT the
// fleet kills what is left and removes the temporary directories. Every
// loop is bounded in count and in time.
//
// Linux only: CPU time, peak RSS and allocated blocks come from /proc and
// stat(2).
package main
