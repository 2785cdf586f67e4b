package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/engine"
)

// target is one replica's directories.
type target struct {
	nodeHostDir string
	smRoot      string
	replicaDir  string
	shardID     uint64
	replicaID   uint64
}

// resolve finds the replica keelctl works on under dir (or the explicit
// --nodehost-dir/--sm-root).
func (g *globals) resolve(dir string) (target, error) {
	t := target{nodeHostDir: g.nodeHostDir, smRoot: g.smRoot}
	if t.nodeHostDir == "" {
		t.nodeHostDir = filepath.Join(dir, "raft")
	}
	if t.smRoot == "" {
		t.smRoot = filepath.Join(dir, "sm")
	}
	st, err := os.Stat(dir)
	switch {
	case err != nil && dir != "":
		return t, fmt.Errorf("%w: %w", errNotKeel, err)
	case err == nil && !st.IsDir():
		return t, fmt.Errorf("%w: %s is not a directory", errNotKeel, dir)
	}
	matches, err := filepath.Glob(filepath.Join(t.smRoot, "shard-*", "replica-*"))
	if err != nil {
		return t, fmt.Errorf("%w: %w", errUsage, err)
	}
	type rep struct{ shard, replica uint64 }
	var found, all []rep
	for _, m := range matches {
		var r rep
		if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(m)), "shard-%d", &r.shard); err != nil {
			continue
		}
		if _, err := fmt.Sscanf(filepath.Base(m), "replica-%d", &r.replica); err != nil {
			continue
		}
		all = append(all, r)
		if (g.shardID == 0 || g.shardID == r.shard) && (g.replicaID == 0 || g.replicaID == r.replica) {
			found = append(found, r)
		}
	}
	for _, rs := range [][]rep{found, all} {
		sort.Slice(rs, func(i, j int) bool {
			return rs[i].shard < rs[j].shard || (rs[i].shard == rs[j].shard && rs[i].replica < rs[j].replica)
		})
	}
	switch len(found) {
	case 0:
		if len(all) > 0 {
			// A --shard or --replica that matches none: name what is there.
			var names []string
			for _, r := range all {
				names = append(names, fmt.Sprintf("shard %d replica %d", r.shard, r.replica))
			}
			return t, fmt.Errorf("%w: %s holds no replica matching %s; it holds %s", errUsage, t.smRoot, g.filterName(), strings.Join(names, ", "))
		}
		return t, fmt.Errorf("%w: no Keel replica under %s (expected %s)", errNotKeel,
			t.smRoot, filepath.Join("shard-N", "replica-M"))
	case 1:
	default:
		var names []string
		for _, r := range found {
			names = append(names, fmt.Sprintf("--shard %d --replica %d", r.shard, r.replica))
		}
		return t, fmt.Errorf("%w: %s holds several replicas; choose one: %s", errUsage, t.smRoot, strings.Join(names, ", "))
	}
	t.shardID, t.replicaID = found[0].shard, found[0].replica
	t.replicaDir = filepath.Join(t.smRoot, fmt.Sprintf("shard-%d", t.shardID), fmt.Sprintf("replica-%d", t.replicaID))
	return t, nil
}

// filterName says which --shard/--replica were asked for.
func (g *globals) filterName() string {
	var parts []string
	if g.shardID != 0 {
		parts = append(parts, fmt.Sprintf("--shard %d", g.shardID))
	}
	if g.replicaID != 0 {
		parts = append(parts, fmt.Sprintf("--replica %d", g.replicaID))
	}
	return strings.Join(parts, " ")
}

// openEngine opens the replica's live image read-only. Pebble takes its
// directory lock even read-only, so a replica a running process holds is
// refused with errLive.
func (t target) openEngine() (*engine.Engine, error) {
	root := engine.NewRoot(t.replicaDir, nil)
	cur, err := root.Current()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errOpen, err)
	}
	if cur == "" {
		return nil, fmt.Errorf("%w: %s has no CURRENT image pointer", errNotKeel, t.replicaDir)
	}
	imgDir := filepath.Join(t.replicaDir, cur)
	lock, err := pebble.LockDirectory(imgDir, vfs.Default)
	if err != nil {
		if isLockErr(err) {
			return nil, fmt.Errorf("%w: %s is held by a running process; stop it first", errLive, imgDir)
		}
		return nil, fmt.Errorf("%w: lock %s: %w", errOpen, imgDir, err)
	}
	// Pebble takes the lock itself on open; release ours first.
	_ = lock.Close()
	e, err := engine.OpenRoot(t.replicaDir, engine.Options{ReadOnly: true})
	if err != nil {
		if isLockErr(err) {
			return nil, fmt.Errorf("%w: %s is held by a running process; stop it first", errLive, imgDir)
		}
		return nil, fmt.Errorf("%w: %w", errOpen, err)
	}
	return e, nil
}

func isLockErr(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) ||
		strings.Contains(err.Error(), "resource temporarily unavailable") ||
		strings.Contains(err.Error(), "lock held")
}

// openReplica resolves dir and opens its replica's image read-only; the
// caller closes the engine.
func (g *globals) openReplica(dir string) (target, *engine.Engine, error) {
	t, err := g.resolve(dir)
	if err != nil {
		return t, nil, err
	}
	e, err := t.openEngine()
	return t, e, err
}
