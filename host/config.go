package host

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/sm"
	"github.com/keel-db/keel/snapshot"
	"github.com/lni/dragonboat/v4/statemachine"
)

// Config configures the Keel state machines a host creates.
type Config struct {
	// RootDir holds one data directory per shard and replica:
	// <RootDir>/shard-<id>/replica-<id>. Required.
	RootDir string
	// Engine configures Pebble; the zero value gives Keel's defaults.
	Engine engine.Options
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// SnapshotStreamBytesPerSecond caps the rate at which a replica writes
	// a snapshot it sends to a follower or exports (0: no cap). A cap
	// leaves CPU and disk to the quorum while a follower catches up, which
	// then takes longer (bench/README.md has the measured trade).
	SnapshotStreamBytesPerSecond int64
	// SnapshotReserveBytes is the free space a received snapshot must leave
	// (snapshot.Options.ReserveBytes); an image that would eat into it is
	// refused before anything is written.
	SnapshotReserveBytes uint64
}

// DataDir is the directory holding a replica's state.
func (c Config) DataDir(shardID, replicaID uint64) string {
	return filepath.Join(c.RootDir, fmt.Sprintf("shard-%d", shardID), fmt.Sprintf("replica-%d", replicaID))
}

// Factory creates Keel state machines for Dragonboat and remembers them so a
// host can reach a replica's state machine (for metrics and status).
type Factory struct {
	cfg Config

	// mu guards sms.
	mu  sync.Mutex
	sms map[[2]uint64]*sm.StateMachine
}

// NewFactory checks cfg and returns a Factory. Pass its Create method to
// NodeHost.StartOnDiskReplica.
func NewFactory(cfg Config) (*Factory, error) {
	if cfg.RootDir == "" {
		return nil, fmt.Errorf("%w: RootDir is empty", ErrConfig)
	}
	return &Factory{cfg: cfg, sms: make(map[[2]uint64]*sm.StateMachine)}, nil
}

// Config returns the factory's configuration.
func (f *Factory) Config() Config { return f.cfg }

// Create is a statemachine.CreateOnDiskStateMachineFunc.
func (f *Factory) Create(shardID, replicaID uint64) statemachine.IOnDiskStateMachine {
	s := sm.New(sm.Config{
		Dir:       f.cfg.DataDir(shardID, replicaID),
		ShardID:   shardID,
		ReplicaID: replicaID,
		Engine:    f.cfg.Engine,
		Logger:    f.cfg.Logger,
		Snapshot:  snapshot.Options{StreamBytesPerSecond: f.cfg.SnapshotStreamBytesPerSecond, ReserveBytes: f.cfg.SnapshotReserveBytes},
	})
	f.mu.Lock()
	f.sms[[2]uint64{shardID, replicaID}] = s
	f.mu.Unlock()
	return s
}

// Func returns Create as Dragonboat's factory type.
func (f *Factory) Func() statemachine.CreateOnDiskStateMachineFunc { return f.Create }

// StateMachine returns the state machine last created for the replica, or
// nil.
func (f *Factory) StateMachine(shardID, replicaID uint64) *sm.StateMachine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sms[[2]uint64{shardID, replicaID}]
}
