package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/logcompact"
	"github.com/keel-db/keel/snapshot"
	"github.com/lni/dragonboat/v4"
)

// services are the loops keeld runs beside its replica, off Dragonboat's
// apply path: the snapshot timer and the Raft log compactor. Both stop
// before the NodeHost closes.
type services struct {
	sched *snapshot.Scheduler
	// comp is nil when --log-compaction=false.
	comp *logcompact.Compactor

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (c config) schedulerConfig(logger *slog.Logger) snapshot.SchedulerConfig {
	return snapshot.SchedulerConfig{
		ShardID:         c.ShardID,
		Interval:        c.SnapshotInterval,
		SnapshotEntries: c.SnapshotEntries,
		Logger:          logger,
	}
}

// startServices starts the snapshot timer and, unless disabled, the log
// compactor for the replica the factory created.
func startServices(nh *dragonboat.NodeHost, f *host.Factory, cfg config, logger *slog.Logger) (*services, error) {
	m := f.StateMachine(cfg.ShardID, cfg.ReplicaID)
	if m == nil {
		return nil, fmt.Errorf("replica %d of shard %d has no state machine", cfg.ReplicaID, cfg.ShardID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &services{cancel: cancel}
	if cfg.LogCompaction {
		policy := logcompact.DefaultPolicy()
		if cfg.LogKeepEntries > 0 {
			// A short window (tests, chaos runs) compacts in small steps.
			policy.KeepEntries = cfg.LogKeepEntries
			policy.TriggerEntries = max(1, cfg.LogKeepEntries/2)
		}
		comp, err := logcompact.New(logcompact.Config{
			NodeHost:  nh,
			ShardID:   cfg.ShardID,
			ReplicaID: cfg.ReplicaID,
			Dirs:      []string{cfg.RaftDir()},
			Floor:     m,
			Logger:    logger,
			Policy:    policy,
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("log compaction: %w", err)
		}
		s.comp = comp
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := comp.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				logger.Error("log compactor stopped", "err", err)
			}
		}()
	}
	// One owner of snapshot requests: with a compactor, the timer's
	// snapshots go through it (logcompact's "One owner of snapshot
	// requests"), so the two never collide in Dragonboat.
	var req snapshot.Requester = nh
	if s.comp != nil {
		req = s.comp
	}
	s.sched = snapshot.NewScheduler(cfg.schedulerConfig(logger), req, m)
	s.sched.Start()
	return s, nil
}

// stop ends both loops and waits for them.
func (s *services) stop() {
	if s == nil {
		return
	}
	s.sched.Stop()
	s.cancel()
	s.wg.Wait()
}
