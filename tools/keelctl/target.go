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

// resolve finds the one replica keelctl works on under dir (or the
// explicit --nodehost-dir/--sm-root). Several matching replicas are a usage
// error naming the --shard/--replica choices; commands that work on many
// (inspect, check) call resolveAll instead.
func (g *globals) resolve(dir string) (target, error) {
	found, err := g.resolveAll(dir)
	if err != nil {
		return target{}, err
	}
	if len(found) > 1 {
		var names []string
		for i, r := range found {
			if i == maxChoices {
				names = append(names, fmt.Sprintf("... (%d more; 'keelctl inspect %s' lists them)", len(found)-i, dir))
				break
			}
			names = append(names, fmt.Sprintf("--shard %d --replica %d", r.shardID, r.replicaID))
		}
		return target{}, fmt.Errorf("%w: %s holds several replicas; choose one: %s", errUsage, found[0].smRoot, strings.Join(names, ", "))
	}
	return found[0], nil
}

// maxChoices bounds the replicas resolve's error names: a NodeHost may host
// a thousand shards.
const maxChoices = 10

// resolveAll finds every replica under dir that --shard and --replica (when
// given) match, sorted by shard then replica. It fails when none does.
func (g *globals) resolveAll(dir string) ([]target, error) {
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
		return nil, fmt.Errorf("%w: %w", errNotKeel, err)
	case err == nil && !st.IsDir():
		return nil, fmt.Errorf("%w: %s is not a directory", errNotKeel, dir)
	}
	all, err := listTablets(t)
	if err != nil {
		return nil, err
	}
	var found []target
	for _, r := range all {
		if (g.shardID == 0 || g.shardID == r.shardID) && (g.replicaID == 0 || g.replicaID == r.replicaID) {
			found = append(found, r)
		}
	}
	if len(found) > 0 {
		return found, nil
	}
	if len(all) > 0 {
		// A --shard or --replica that matches none: name what is there.
		var names []string
		for i, r := range all {
			if i == maxChoices {
				names = append(names, fmt.Sprintf("... (%d more)", len(all)-i))
				break
			}
			names = append(names, fmt.Sprintf("shard %d replica %d", r.shardID, r.replicaID))
		}
		return nil, fmt.Errorf("%w: %s holds no replica matching %s; it holds %s", errUsage, t.smRoot, g.filterName(), strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("%w: no Keel replica under %s (expected %s)", errNotKeel,
		t.smRoot, filepath.Join("shard-N", "replica-M"))
}

// listTablets lists the shard-<id>/replica-<id> directories under base's
// smRoot, sorted by shard then replica, each a target sharing base's
// directories. Names that do not parse as IDs are not Keel's and skipped.
func listTablets(base target) ([]target, error) {
	matches, err := filepath.Glob(filepath.Join(base.smRoot, "shard-*", "replica-*"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	var all []target
	for _, m := range matches {
		r := base
		if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(m)), "shard-%d", &r.shardID); err != nil {
			continue
		}
		if _, err := fmt.Sscanf(filepath.Base(m), "replica-%d", &r.replicaID); err != nil {
			continue
		}
		r.replicaDir = filepath.Join(base.smRoot, fmt.Sprintf("shard-%d", r.shardID), fmt.Sprintf("replica-%d", r.replicaID))
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool {
		return all[i].shardID < all[j].shardID || (all[i].shardID == all[j].shardID && all[i].replicaID < all[j].replicaID)
	})
	return all, nil
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
