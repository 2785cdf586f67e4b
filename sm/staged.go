package sm

import (
	"bytes"
	"io"
	"os"

	"github.com/keel-db/keel/snapshot"
)

// StageImage builds the image a snapshot stream carries while the stream is
// still arriving (snapshot.Stage), for RecoverFromSnapshot to adopt when
// Raft hands it the same snapshot. It runs on the transport's goroutine,
// concurrently with every other call: it writes only its own staged dir.
// It returns the staged dir's name and the index it was staged for.
func (s *StateMachine) StageImage(r io.Reader, stopc <-chan struct{}) (string, uint64, error) {
	var name string
	claim := func(n string) {
		s.stageMu.Lock()
		defer s.stageMu.Unlock()
		if s.staging == nil {
			s.staging = make(map[string]struct{})
		}
		s.staging[n] = struct{}{}
		name = n
	}
	defer func() {
		if name != "" {
			s.stageMu.Lock()
			delete(s.staging, name)
			s.stageMu.Unlock()
		}
	}()
	n, h, err := snapshot.Stage(r, s.installConfig(), stopc, claim)
	if err != nil {
		s.stats.stageFailed.Add(1)
		return "", 0, err
	}
	s.stats.staged.Add(1)
	s.lowerStagedFloor(h.SnapshotIndex)
	return n, h.SnapshotIndex, nil
}

// DropStagedImage removes a staged image its stream's receiver gave up on.
func (s *StateMachine) DropStagedImage(name string) {
	if err := s.root.RemoveStaged(name); err != nil {
		s.log.Warn("keel: remove staged image", "staged", name, "err", err)
	}
}

// pruneStaged removes the staged images the replica no longer needs: those
// for snapshots at or below applied, and unfinished ones (a staging cut off
// by a crash), sparing stagings in progress.
func (s *StateMachine) pruneStaged(applied uint64) {
	if s.cfg.Engine.ReadOnly {
		return
	}
	left, err := s.root.PruneStaged(applied, func(n string) bool {
		s.stageMu.Lock()
		defer s.stageMu.Unlock()
		_, busy := s.staging[n]
		return busy
	})
	if err != nil {
		s.log.Warn("keel: prune staged images", "err", err)
		return
	}
	// What is left sets the floor again (a staging that ends meanwhile
	// lowers it itself).
	var floor uint64
	for _, st := range left {
		if st.Sealed != nil && (floor == 0 || st.Index < floor) {
			floor = st.Index
		}
	}
	s.stagedFloor.Store(floor)
}

// pruneStagedAsync prunes in the background, one prune at a time: Update
// must not wait on the filesystem for it.
func (s *StateMachine) pruneStagedAsync() {
	if !s.pruning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.pruning.Store(false)
		s.pruneStaged(s.applied.Load())
	}()
}

// lowerStagedFloor records a staged image at index.
func (s *StateMachine) lowerStagedFloor(index uint64) {
	for {
		f := s.stagedFloor.Load()
		if f != 0 && f <= index {
			return
		}
		if s.stagedFloor.CompareAndSwap(f, index) {
			return
		}
	}
}

func (s *StateMachine) installConfig() snapshot.InstallConfig {
	return snapshot.InstallConfig{
		Root:      s.root,
		Engine:    s.cfg.Engine,
		ShardID:   s.cfg.ShardID,
		ReplicaID: s.cfg.ReplicaID,
		Options:   s.cfg.Snapshot,
	}
}

// installOrAdopt installs the snapshot r carries: from the image staged
// while its stream arrived when there is one for the same header (the
// stream is then read no further than its header), else from r.
func (s *StateMachine) installOrAdopt(r io.Reader, done <-chan struct{}) (string, snapshot.Header, error) {
	h, err := snapshot.ReadHeader(r)
	if err != nil {
		return "", snapshot.Header{}, err
	}
	if h.ShardID == s.cfg.ShardID {
		staged, found, err := snapshot.FindStaged(s.root, h)
		if err != nil {
			return "", snapshot.Header{}, err
		}
		if found {
			if testCrashBeforeAdopt {
				crashNow()
			}
			name, err := s.root.AdoptStaged(staged)
			if err != nil {
				return "", snapshot.Header{}, err
			}
			s.stats.adopted.Add(1)
			return name, h, nil
		}
	}
	return snapshot.Install(io.MultiReader(bytes.NewReader(h.Encode()), r), s.installConfig(), done)
}

// testCrashBeforeAdopt is a crash point for the crash test of the window
// that staging opens (tools/keeld TestCrashBeforeAdoptingStagedImage):
// Raft has recorded a snapshot whose Dragonboat copy was cut short, and
// the staged image is not yet published. With KEEL_TEST_CRASH=before-adopt
// in its environment the process kills itself (SIGKILL) there. Nothing
// else reads the variable.
var testCrashBeforeAdopt = os.Getenv("KEEL_TEST_CRASH") == "before-adopt"

func crashNow() {
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Kill()
	}
	os.Exit(137)
}
