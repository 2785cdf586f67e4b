package main

// inspect and check on a data directory holding many replicas: keeld's
// --shards N and --shard-map run one replica of many shards on one NodeHost,
// so DIR/raft is one NodeHost directory (one LogDB for every shard) and
// DIR/sm/shard-<id>/replica-<id> one tablet per shard. The LogDB is opened
// once (nodeHostLog) and each tablet in turn, so memory stays that of one
// replica however many the directory holds.

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/keel-db/keel/engine"
)

// shardRow is one replica's line of `keelctl inspect` on a directory
// holding several replicas (--json prints an array of them).
type shardRow struct {
	ShardID      uint64 `json:"shard_id"`
	ReplicaID    uint64 `json:"replica_id"`
	ReplicaDir   string `json:"replica_dir"`
	AppliedIndex uint64 `json:"applied_index"`
	Keys         uint64 `json:"keys"`
	Bytes        uint64 `json:"bytes"`
	Exact        bool   `json:"exact"`
	// RaftLog is nil when the log could not be read; RaftLogError says
	// why.
	RaftLog      *RaftLogRange `json:"raft_log,omitempty"`
	RaftLogError string        `json:"raft_log_error,omitempty"`
	Leftovers    []string      `json:"leftovers"`
	// Error is set when the tablet does not open; the other fields but the
	// identity are then zero.
	Error string `json:"error,omitempty"`
}

// inspectAll reports every replica of ts, which share one NodeHost
// directory. It fails with errLive as soon as one is held by a running
// process, and with errOpen after printing when some tablet did not open.
func inspectAll(g *globals, dir string, ts []target, exact bool) error {
	l := openNodeHostLog(ts[0].nodeHostDir)
	defer l.close()
	if err := l.openErr(); isLiveErr(err) {
		return err
	}
	rows := make([]shardRow, 0, len(ts))
	broken := 0
	for _, t := range ts {
		row, err := inspectRow(g, t, l, exact)
		if isLiveErr(err) {
			return err
		}
		if err != nil {
			row.Error = err.Error()
			broken++
		}
		rows = append(rows, row)
	}
	if g.json {
		if err := g.printJSON(rows); err != nil {
			return err
		}
	} else {
		printShardTable(g, dir, rows, l)
	}
	if broken > 0 {
		return fmt.Errorf("%w: %d of %d tablets in %s did not open", errOpen, broken, len(ts), dir)
	}
	return nil
}

// inspectRow reads one replica's row; the engine is closed before the next.
func inspectRow(g *globals, t target, l *nodeHostLog, exact bool) (shardRow, error) {
	row := shardRow{ShardID: t.shardID, ReplicaID: t.replicaID, ReplicaDir: t.replicaDir, Leftovers: []string{}}
	e, err := t.openEngine()
	if err != nil {
		return row, err
	}
	defer e.Close()
	st, err := replicaStats(g, e, exact)
	if err != nil {
		return row, fmt.Errorf("%w: %w", errOpen, err)
	}
	row.AppliedIndex, row.Keys, row.Bytes, row.Exact = st.AppliedIndex, st.Keys, st.Bytes, st.Exact
	if left, err := engine.NewRoot(t.replicaDir, nil).Leftovers(); err == nil {
		row.Leftovers = append(row.Leftovers, left...)
	}
	if hosted, known := l.isHosted(t.shardID, t.replicaID); known && !hosted {
		row.RaftLogError = "not hosted by this NodeHost (no Raft records): leftover of a removed replica"
		return row, nil
	}
	if info, err := l.info(t.shardID, t.replicaID); err == nil {
		row.RaftLog = &info.RaftLogRange
	} else {
		row.RaftLogError = err.Error()
	}
	return row, nil
}

func printShardTable(g *globals, dir string, rows []shardRow, l *nodeHostLog) {
	var keys, bytes uint64
	exact := true
	for _, r := range rows {
		keys += r.Keys
		bytes += r.Bytes
		exact = exact && r.Exact
	}
	count := "estimated"
	if exact {
		count = "exact"
	}
	fmt.Fprintf(g.stdout, "%d replicas in %s: %d keys, %d bytes (%s)", len(rows), dir, keys, bytes, count)
	if l.openErr() == nil {
		fmt.Fprintf(g.stdout, "; raft dir allocated %d bytes", l.alloc)
	}
	fmt.Fprintln(g.stdout)
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "shard\treplica\tapplied\tkeys\tbytes\tlog first\tlog last\tsnapshot\t\n")
	var notes []string
	for _, r := range rows {
		name := fmt.Sprintf("shard %d replica %d", r.ShardID, r.ReplicaID)
		if r.Error != "" {
			fmt.Fprintf(w, "%d\t%d\t-\t-\t-\t-\t-\t-\t\n", r.ShardID, r.ReplicaID)
			notes = append(notes, fmt.Sprintf("%s: does not open: %s", name, r.Error))
			continue
		}
		logCols := "-\t-\t-"
		if r.RaftLog != nil {
			logCols = fmt.Sprintf("%d\t%d\t%d", r.RaftLog.FirstIndex, r.RaftLog.LastIndex, r.RaftLog.SnapshotIndex)
		} else {
			notes = append(notes, fmt.Sprintf("%s: raft log unavailable: %s", name, r.RaftLogError))
		}
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%s\t\n", r.ShardID, r.ReplicaID, r.AppliedIndex, r.Keys, r.Bytes, logCols)
		for _, left := range r.Leftovers {
			notes = append(notes, fmt.Sprintf("%s: leftover %s", name, left))
		}
	}
	_ = w.Flush()
	for _, n := range notes {
		fmt.Fprintln(g.stdout, n)
	}
}

// checkAllReport is `keelctl check --json` on a directory holding several
// replicas.
type checkAllReport struct {
	Replicas []checkReport `json:"replicas"`
	// Failed counts the replicas with problems.
	Failed int  `json:"failed"`
	OK     bool `json:"ok"`
}

// checkAll checks every replica of ts, which share the NodeHost log l: one
// line per replica, then a summary; errProblems when any has a problem.
func checkAll(g *globals, dir string, ts []target, l *nodeHostLog) error {
	rep := checkAllReport{Replicas: make([]checkReport, 0, len(ts))}
	for _, t := range ts {
		r, err := check(t, l)
		if err != nil {
			return err
		}
		if !r.OK {
			rep.Failed++
		}
		rep.Replicas = append(rep.Replicas, r)
	}
	rep.OK = rep.Failed == 0
	if g.json {
		if err := g.printJSON(rep); err != nil {
			return err
		}
	} else {
		w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(w, "shard\treplica\tapplied\tkeys\tresult\n")
		for _, r := range rep.Replicas {
			result := "OK"
			if !r.OK {
				result = "PROBLEM: " + strings.Join(r.Problems, "; PROBLEM: ")
			}
			fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%s\n", r.ShardID, r.ReplicaID, r.AppliedIndex, r.Keys, result)
		}
		_ = w.Flush()
		if rep.OK {
			fmt.Fprintf(g.stdout, "OK: %d replicas\n", len(rep.Replicas))
		} else {
			fmt.Fprintf(g.stdout, "PROBLEMS in %d of %d replicas\n", rep.Failed, len(rep.Replicas))
		}
	}
	if rep.OK {
		return nil
	}
	for _, r := range rep.Replicas {
		for _, p := range r.Problems {
			fmt.Fprintf(g.stderr, "keelctl: check: shard %d replica %d: %s\n", r.ShardID, r.ReplicaID, p)
		}
	}
	return fmt.Errorf("%w: problems in %d of %d replicas in %s", errProblems, rep.Failed, len(rep.Replicas), dir)
}
