package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/logcompact"
	"github.com/keel-db/keel/snapshot"
	"github.com/lni/dragonboat/v4"
)

// services are the loops keeld runs beside each of its replicas, off
// Dragonboat's apply path: the snapshot timer and the Raft log compactor.
// All stop before the NodeHost closes.
type services struct {
	// sched and comp serve the first placed replica (cfg.ShardID), which
	// the single-shard /status fields and metrics describe.
	sched *snapshot.Scheduler
	// comp is nil when --log-compaction=false.
	comp *logcompact.Compactor
	// mu guards byShard: startServices fills it before the server starts,
	// and a replica joined at runtime adds its loops (startJoined).
	mu sync.Mutex
	// byShard holds every replica's loops, by shard ID.
	byShard map[uint64]*shardServices
	// compactors ticks every replica's Compactor from one goroutine and
	// one ticker (logcompact.Runner): a thousand idle replicas cost a
	// thousand log-range reads a second, not a thousand timers.
	compactors *logcompact.Runner

	// ctx ends every loop; cancel is called by stop.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// shardServices are one replica's loops.
type shardServices struct {
	sched *snapshot.Scheduler
	comp  *logcompact.Compactor
}

func (c config) schedulerConfig(logger *slog.Logger) snapshot.SchedulerConfig {
	return c.schedulerConfigFor(c.ShardID, logger)
}

func (c config) schedulerConfigFor(shardID uint64, logger *slog.Logger) snapshot.SchedulerConfig {
	return snapshot.SchedulerConfig{
		ShardID:         shardID,
		Interval:        c.SnapshotInterval,
		SnapshotEntries: c.SnapshotEntries,
		Logger:          logger,
	}
}

// startServices starts the snapshot timer and, unless disabled, the log
// compactor for every replica placed on this process.
func startServices(nh *dragonboat.NodeHost, f *host.Factory, cfg config, logger *slog.Logger) (*services, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &services{ctx: ctx, cancel: cancel, byShard: map[uint64]*shardServices{},
		compactors: logcompact.NewRunner(0)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.compactors.Run(ctx) // returns when ctx ends
	}()
	for _, p := range cfg.Sharding.Placement {
		ss, err := s.startShard(nh, f, cfg, p, logger)
		if err != nil {
			s.stop()
			return nil, err
		}
		s.byShard[p.ShardID] = ss
	}
	if first := s.byShard[cfg.ShardID]; first != nil {
		s.sched, s.comp = first.sched, first.comp
	}
	return s, nil
}

// startJoined starts the loops of a replica started at runtime (a join).
func (s *services) startJoined(nh *dragonboat.NodeHost, f *host.Factory, cfg config, p placed, logger *slog.Logger) error {
	// A replica of this shard that left before (its loops were stopped
	// then; this is a guard) must not keep a timer beside the new one.
	s.stopShard(p.ShardID)
	ss, err := s.startShard(nh, f, cfg, p, logger)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byShard[p.ShardID] = ss
	return nil
}

// stopShard ends the loops of shardID's replica and forgets them: the
// replica left the shard (DELETE of this process's own replica), so its
// timer would request snapshots of a shard no longer here every interval,
// failing, and its compactor would tick a log that is gone. A replica that
// joins the shard later gets loops of its own (startJoined). The first
// shard's stats in sched and comp stay readable.
func (s *services) stopShard(shardID uint64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	ss := s.byShard[shardID]
	delete(s.byShard, shardID)
	s.mu.Unlock()
	if ss == nil {
		return
	}
	ss.sched.Stop()
	if ss.comp != nil {
		s.compactors.Remove(ss.comp)
	}
}

// compactorOf returns the log compactor whose figures /status shows for
// shardID (the first shard): its replica's current one, or, when that
// replica left, the one it had at start (its stats stay readable). A
// replica that joined again has loops of its own, and the stopped
// compactor's figures would be stale.
func (s *services) compactorOf(shardID uint64) *logcompact.Compactor {
	if ss := s.shard(shardID); ss != nil {
		return ss.comp
	}
	if s == nil {
		return nil
	}
	return s.comp
}

// shard returns one replica's loops, or nil.
func (s *services) shard(id uint64) *shardServices {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byShard[id]
}

func (s *services) startShard(nh *dragonboat.NodeHost, f *host.Factory, cfg config, p placed, logger *slog.Logger) (*shardServices, error) {
	m := f.StateMachine(p.ShardID, p.ReplicaID)
	if m == nil {
		return nil, fmt.Errorf("replica %d of shard %d has no state machine", p.ReplicaID, p.ShardID)
	}
	ss := &shardServices{}
	if cfg.LogCompaction {
		policy := logcompact.DefaultPolicy()
		if cfg.LogKeepEntries > 0 {
			// A short window (tests, chaos runs) compacts in small steps.
			policy.KeepEntries = cfg.LogKeepEntries
			policy.TriggerEntries = max(1, cfg.LogKeepEntries/2)
		}
		comp, err := logcompact.New(logcompact.Config{
			NodeHost:  nh,
			ShardID:   p.ShardID,
			ReplicaID: p.ReplicaID,
			Dirs:      []string{cfg.RaftDir()},
			Floor:     m,
			Applied:   m,
			Logger:    logger,
			Policy:    policy,
		})
		if err != nil {
			return nil, fmt.Errorf("log compaction: %w", err)
		}
		ss.comp = comp
		s.compactors.Add(comp)
	}
	// One owner of snapshot requests: with a compactor, the timer's
	// snapshots go through it (logcompact's "One owner of snapshot
	// requests"), so the two never collide in Dragonboat.
	var req snapshot.Requester = nh
	if ss.comp != nil {
		req = ss.comp
	}
	ss.sched = snapshot.NewScheduler(cfg.schedulerConfigFor(p.ShardID, logger), req, m)
	ss.sched.Start()
	return ss, nil
}

// of returns the loops of shardID's replica, nil when s is nil or the
// shard is not hosted here.
func (s *services) of(shardID uint64) *shardServices {
	return s.shard(shardID)
}

// stop ends both loops and waits for them.
func (s *services) stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	for _, ss := range s.byShard {
		ss.sched.Stop()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}
