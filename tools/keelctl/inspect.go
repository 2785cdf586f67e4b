package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/keel-db/keel/engine"
	"github.com/spf13/cobra"
)

// inspectReport is `keelctl inspect`'s output.
type inspectReport struct {
	ShardID      uint64        `json:"shard_id"`
	ReplicaID    uint64        `json:"replica_id"`
	ReplicaDir   string        `json:"replica_dir"`
	Image        string        `json:"image"`
	AppliedIndex uint64        `json:"applied_index"`
	Keys         uint64        `json:"keys"`
	Bytes        uint64        `json:"bytes"`
	Exact        bool          `json:"exact"`
	Levels       []levelReport `json:"levels"`
	RaftLog      *RaftLogInfo  `json:"raft_log,omitempty"`
	RaftLogError string        `json:"raft_log_error,omitempty"`
	Leftovers    []string      `json:"leftovers"`
	// Staged lists images staged from a snapshot stream and not yet
	// adopted or pruned (engine.Root.ListStaged): index, and whether the
	// staging finished.
	Staged []stagedReport `json:"staged"`
}

type stagedReport struct {
	Name   string `json:"name"`
	Index  uint64 `json:"index"`
	Sealed bool   `json:"sealed"`
}

type levelReport struct {
	Level int   `json:"level"`
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
}

func newInspectCmd(g *globals) *cobra.Command {
	var exact bool
	cmd := &cobra.Command{
		Use:   "inspect DIR",
		Short: "Show a replica's identity, applied index, data size, Pebble levels, Raft log and leftovers",
		Long: `inspect shows one replica's identity, applied index, data size, Pebble levels,
Raft log and leftovers. On a directory holding several replicas (keeld
--shards or --shard-map) it prints one line per replica instead (--json: an
array); --shard N (and --replica M) picks one for the detailed view.`,
		Args: args("DIR"),
		RunE: func(cmd *cobra.Command, a []string) error {
			ts, err := g.resolveAll(a[0])
			if err != nil {
				return err
			}
			if len(ts) > 1 {
				return inspectAll(g, a[0], ts, exact)
			}
			rep, err := inspect(g, ts[0], exact)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(rep)
			}
			printInspect(g, rep)
			return nil
		},
	}
	cmd.Flags().BoolVar(&exact, "exact", false, "count keys and bytes exactly (reads every key)")
	return cmd
}

func inspect(g *globals, t target, exact bool) (inspectReport, error) {
	e, err := t.openEngine()
	if err != nil {
		return inspectReport{}, err
	}
	defer e.Close()
	rep := inspectReport{ShardID: t.shardID, ReplicaID: t.replicaID, ReplicaDir: t.replicaDir, Leftovers: []string{}}
	root := engine.NewRoot(t.replicaDir, nil)
	if rep.Image, err = root.Current(); err != nil {
		return rep, fmt.Errorf("%w: %w", errOpen, err)
	}
	st, err := replicaStats(g, e, exact)
	if err != nil {
		return rep, fmt.Errorf("%w: %w", errOpen, err)
	}
	rep.AppliedIndex, rep.Keys, rep.Bytes, rep.Exact = st.AppliedIndex, st.Keys, st.Bytes, st.Exact
	m := e.Metrics()
	for i, l := range m.Levels {
		rep.Levels = append(rep.Levels, levelReport{Level: i, Files: l.TablesCount, Bytes: l.TablesSize})
	}
	if left, err := root.Leftovers(); err == nil {
		rep.Leftovers = append(rep.Leftovers, left...)
	}
	rep.Staged = []stagedReport{}
	if staged, err := root.ListStaged(); err == nil {
		for _, s := range staged {
			rep.Staged = append(rep.Staged, stagedReport{Name: s.Name, Index: s.Index, Sealed: s.Sealed != nil})
		}
	}
	if info, err := readRaftLog(t.nodeHostDir, t.shardID, t.replicaID); err == nil {
		rep.RaftLog = &info
	} else {
		rep.RaftLogError = err.Error()
	}
	return rep, nil
}

// countWithProgress counts keys exactly, drawing a progress bar against
// Pebble's size estimate.
func countWithProgress(g *globals, e *engine.Engine) (engine.Stats, error) {
	est, _ := e.Stats(false)
	bar := g.progress(int64(est.Bytes), "counting")
	defer bar.Close()
	v, err := e.NewView()
	if err != nil {
		return engine.Stats{}, err
	}
	defer v.Close()
	st := engine.Stats{Exact: true}
	if st.AppliedIndex, err = v.AppliedIndex(); err != nil {
		return st, err
	}
	err = v.Scan(nil, nil, 0, func(k, val []byte) bool {
		st.Keys++
		st.Bytes += uint64(len(k) + len(val))
		if st.Keys%4096 == 0 {
			_ = bar.Set64(int64(st.Bytes))
		}
		return true
	})
	return st, err
}

func printInspect(g *globals, r inspectReport) {
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	count := "estimated"
	if r.Exact {
		count = "exact"
	}
	fmt.Fprintf(w, "shard\t%d\n", r.ShardID)
	fmt.Fprintf(w, "replica\t%d\n", r.ReplicaID)
	fmt.Fprintf(w, "replica dir\t%s\n", r.ReplicaDir)
	fmt.Fprintf(w, "image\t%s\n", r.Image)
	fmt.Fprintf(w, "applied index\t%d\n", r.AppliedIndex)
	fmt.Fprintf(w, "keys\t%d (%s)\n", r.Keys, count)
	fmt.Fprintf(w, "bytes\t%d (%s)\n", r.Bytes, count)
	if r.RaftLog != nil {
		fmt.Fprintf(w, "raft log\tfirst %d, last %d (stored from %d)\n", r.RaftLog.FirstIndex, r.RaftLog.LastIndex, r.RaftLog.StoredFirstIndex)
		fmt.Fprintf(w, "last snapshot index\t%d\n", r.RaftLog.SnapshotIndex)
		fmt.Fprintf(w, "raft dir allocated\t%d bytes\n", r.RaftLog.AllocatedBytes)
	} else {
		fmt.Fprintf(w, "raft log\tunavailable: %s\n", r.RaftLogError)
	}
	for _, s := range r.Staged {
		state := "sealed, waiting for Raft"
		if !s.Sealed {
			state = "unfinished, pruned at the next open"
		}
		fmt.Fprintf(w, "staged image\t%s (index %d, %s)\n", s.Name, s.Index, state)
	}
	if len(r.Leftovers) == 0 {
		fmt.Fprintf(w, "leftovers\tnone\n")
	} else {
		for _, l := range r.Leftovers {
			fmt.Fprintf(w, "leftover\t%s\n", l)
		}
	}
	_ = w.Flush()
	fmt.Fprintln(g.stdout)
	w = tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "level\tfiles\tbytes\t\n")
	for _, l := range r.Levels {
		fmt.Fprintf(w, "L%d\t%d\t%d\t\n", l.Level, l.Files, l.Bytes)
	}
	_ = w.Flush()
}

// replicaStats counts the image's user data: exactly (with a progress bar
// on a terminal) or from Pebble's estimates.
func replicaStats(g *globals, e *engine.Engine, exact bool) (engine.Stats, error) {
	if exact {
		return countWithProgress(g, e)
	}
	return e.Stats(false)
}
