// Command idle measures what three keeld processes cost when every shard
// is idle and quiesced (issue 14's "1,000 shards on 3 keeld processes idle
// at <= 5% of a core each"). By hand:
//
//	go build -o /tmp/keeld ./tools/keeld
//	go run ./bench/idle -keeld /tmp/keeld -out bench/results/runs/idle.json
//	go run ./bench/idle -keeld /tmp/keeld -keeld-base /tmp/keeld-main \
//	    -rounds 2 -window 30s -out bench/results/runs/idle-ab.json
//
// # One run
//
// A run starts three keeld processes on 127.0.0.1 in fresh directories,
// each with --members of the three, --shards N --quiesce and keeld's
// defaults otherwise (the tick is host.RTTForShards(N); -args adds flags),
// then waits, each step on an event read from the processes, never on a
// fixed sleep:
//
//  1. leaders: every shard reports keel_leader_known 1 on at least one
//     process (GET /metrics, once a second; a follower that missed the
//     election of a shard that then quiesced learns its leader only when
//     the shard wakes, so "all three" may never come);
//  2. first snapshot timers: every shard's keel_snapshots_total of kind
//     timer_taken, timer_skipped, timer_rejected or timer_failed is at
//     least 1 on all three, so the start-up wave of snapshots (the timer's
//     first run comes 1/2 to 1 interval after the start) is over;
//  3. quiescence: no byte arrived on any of the three Raft listeners' TCP
//     connections (ss(8)'s bytes_received) for -quiet (default 2 s, ten
//     ticks at 200 ms): a shard that has not quiesced sends a heartbeat
//     every tick.
//
// Nothing polls the processes after that. The run then reads each
// process's user+system CPU time from /proc/<pid>/stat over -window, the
// Raft bytes that arrived meanwhile (0 when everything stayed quiesced),
// and the RSS at the end; with -profile DIR it then takes a CPU profile of
// each process over a second window of the same length (apart from the
// measured one, whose figure it would raise) and a heap profile, through
// KEEL_PPROF.
//
// # A/B
//
// -keeld-base PATH alternates the baseline and the candidate (-keeld),
// -rounds times (A,B then B,A), and reports each build's mean per-process
// CPU and the ratio candidate/baseline. -base-args gives the baseline its
// own extra flags (the same binary at another --rtt-ms, say). The load average is recorded at
// the start and before each window: on a shared machine it says how much
// to trust the figures.
//
// # Processes
//
// Every keeld is started with Pdeathsig SIGKILL, stopped with SIGTERM
// (SIGKILL after 20 s) at the end of its run, and its directory removed;
// SIGINT stops the run and cleans up. Linux only (/proc, ss).
package main
