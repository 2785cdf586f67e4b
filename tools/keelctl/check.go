package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/cockroachdb/pebble/v2"
	"github.com/keel-db/keel/engine"
	"github.com/spf13/cobra"
)

// checkReport is `keelctl check`'s output: every problem found, not only the
// first, so the crash tests can use it as their oracle.
type checkReport struct {
	ShardID      uint64       `json:"shard_id"`
	ReplicaID    uint64       `json:"replica_id"`
	AppliedIndex uint64       `json:"applied_index"`
	RaftLog      *RaftLogInfo `json:"raft_log,omitempty"`
	Keys         uint64       `json:"keys"`
	Problems     []string     `json:"problems"`
	OK           bool         `json:"ok"`
}

func newCheckCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check DIR",
		Short: "Check replicas' consistency; exit 1 and name each problem",
		Long: `check opens the engine, reads every key and checks the LSM's levels, checks the
recorded identity, checks that the applied index lies within what the Raft log
can account for (not below the last snapshot, not past the last entry), looks
for orphaned checkpoints and images, and checks that the NodeHost still hosts
the replica: a tablet Dragonboat's LogDB holds no records of is a leftover of
a removed replica. On a directory holding several replicas, without --shard,
it checks every one and prints a line per replica and a summary. It exits 1
when it finds a problem.`,
		Args: args("DIR"),
		RunE: func(cmd *cobra.Command, a []string) error {
			ts, err := g.resolveAll(a[0])
			if err != nil {
				return err
			}
			l := openNodeHostLog(ts[0].nodeHostDir)
			defer l.close()
			if len(ts) > 1 {
				return checkAll(g, a[0], ts, l)
			}
			rep, err := check(ts[0], l)
			if err != nil {
				return err
			}
			if g.json {
				if err := g.printJSON(rep); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintf(w, "shard\t%d\nreplica\t%d\napplied index\t%d\nkeys\t%d\n", rep.ShardID, rep.ReplicaID, rep.AppliedIndex, rep.Keys)
				if rep.RaftLog != nil {
					fmt.Fprintf(w, "raft log\tfirst %d, last %d, snapshot %d\n", rep.RaftLog.FirstIndex, rep.RaftLog.LastIndex, rep.RaftLog.SnapshotIndex)
				}
				_ = w.Flush()
				for _, p := range rep.Problems {
					fmt.Fprintf(g.stdout, "PROBLEM: %s\n", p)
				}
				if rep.OK {
					fmt.Fprintln(g.stdout, "OK")
				}
			}
			if !rep.OK {
				for _, p := range rep.Problems {
					fmt.Fprintf(g.stderr, "keelctl: check: %s\n", p)
				}
				return fmt.Errorf("%w: %d problem(s) in %s", errProblems, len(rep.Problems), a[0])
			}
			return nil
		},
	}
}

// check checks one replica against the NodeHost's log l.
func check(t target, l *nodeHostLog) (checkReport, error) {
	rep := checkReport{ShardID: t.shardID, ReplicaID: t.replicaID, Problems: []string{}}
	problem := func(format string, a ...interface{}) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, a...)) }
	e, err := t.openEngine()
	if err != nil {
		if isUnusable(err) && !isLiveErr(err) {
			// A replica that does not open is the most serious problem
			// there is; report it as one rather than failing outright.
			problem("engine does not open: %v", err)
			return finish(rep), nil
		}
		return rep, err
	}
	defer e.Close()
	if rep.AppliedIndex, err = e.AppliedIndex(); err != nil {
		problem("applied index unreadable: %v", err)
	}
	switch id, ok, err := e.Identity(); {
	case err != nil:
		problem("identity unreadable: %v", err)
	case !ok:
		problem("image records no shard/replica identity")
	case id.ShardID != t.shardID || id.ReplicaID != t.replicaID:
		problem("image belongs to %s but sits in the directory of shard %d replica %d", id, t.shardID, t.replicaID)
	}
	// Read everything: a missing or damaged sstable fails here.
	if err := e.DB().CheckLevels(&pebble.CheckLevelsStats{}); err != nil {
		problem("LSM check failed: %v", err)
	}
	if v, err := e.NewView(); err == nil {
		h, err := v.Hash(nil)
		_ = v.Close()
		if err != nil {
			problem("reading user data failed: %v", err)
		}
		rep.Keys = h.Keys
	} else {
		problem("cannot read: %v", err)
	}
	if left, err := engine.NewRoot(t.replicaDir, nil).Leftovers(); err != nil {
		problem("cannot list the replica directory: %v", err)
	} else {
		for _, l := range left {
			problem("orphaned checkpoint or image left behind: %s", l)
		}
	}
	if err := l.openErr(); isLiveErr(err) {
		return rep, err
	}
	// A tablet Dragonboat will not restart is never opened again: host.Host
	// and keeld remove it with the replica (RemoveReplica), so one still
	// here is a leftover of a removal that did not finish, or of a copy.
	if hosted, known := l.isHosted(t.shardID, t.replicaID); known && !hosted {
		problem("tablet for shard %d replica %d is not hosted by this NodeHost: leftover of a removed replica; keeld's RemoveReplica deletes it",
			t.shardID, t.replicaID)
		return finish(rep), nil
	}
	info, err := l.info(t.shardID, t.replicaID)
	if err != nil {
		if isLiveErr(err) {
			return rep, err
		}
		problem("Raft log unreadable: %v", err)
		return finish(rep), nil
	}
	rep.RaftLog = &info
	if info.LastIndex > 0 && rep.AppliedIndex > info.LastIndex {
		problem("applied index %d is ahead of the Raft log's last index %d: the state holds entries the log never recorded",
			rep.AppliedIndex, info.LastIndex)
	}
	// Dragonboat compacts the log only behind a snapshot whose OnDiskIndex
	// the state machine had synced; applied state below it was lost, and
	// Dragonboat refuses to restart such a replica.
	if rep.AppliedIndex < info.SnapshotOnDiskIndex {
		problem("applied index %d is below the last snapshot's state machine index %d: the log was compacted past state that was never made durable",
			rep.AppliedIndex, info.SnapshotOnDiskIndex)
		if gone := info.StoredFirstIndex; gone == 0 || gone > rep.AppliedIndex+1 {
			if gone == 0 {
				gone = info.FirstIndex
			}
			problem("entries %d..%d are gone from the log and not in the state", rep.AppliedIndex+1, gone-1)
		}
	}
	return finish(rep), nil
}

func finish(r checkReport) checkReport {
	r.OK = len(r.Problems) == 0
	return r
}
