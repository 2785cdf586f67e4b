package snapshot

import (
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
	"github.com/keel-db/keel/engine"
)

// InstallConfig says where a received image goes and whose it becomes.
type InstallConfig struct {
	// Root is the receiving replica's root.
	Root engine.Root
	// Engine opens the received image to check and stamp it.
	Engine engine.Options
	// ShardID and ReplicaID are the receiving replica's: a stream for
	// another shard is refused, and the image is stamped with this identity.
	ShardID, ReplicaID uint64
	// Limits for the stream.
	Options Options
}

// Install reads a stream from r, verifies it and publishes it as the live
// image under cfg.Root, returning the new image's name and the stream
// header. Nothing live is touched until every check has passed:
//
//  1. ReadStream into a fresh tmp-* dir (all checksums, names, limits,
//     shard; files and dir fsynced).
//  2. The header must describe an exact image (ImageAppliedIndex ==
//     SnapshotIndex).
//  3. Open the image with Pebble; its applied index must equal the
//     header's, and any identity in it must be for this shard. Stamp it
//     with the local identity (a durable write: without a WAL, a flush)
//     and close it.
//  4. engine.Root.Publish: rename to the next img-*, then swap CURRENT
//     atomically.
//
// On an error before step 4 the work dir is removed and the old image is
// as it was. A crash at any instant leaves CURRENT naming the old or the
// new image; the next engine.OpenRoot sweeps the rest. The caller swaps
// its engine to the new image and removes the old one.
func Install(r io.Reader, cfg InstallConfig, stopc <-chan struct{}) (name string, h Header, err error) {
	fs := cfg.Root.FS
	tmp, err := cfg.Root.TempDir("recv")
	if err != nil {
		return "", Header{}, err
	}
	publishing := false
	defer func() {
		if !publishing {
			// Best effort: a leftover is swept by the next OpenRoot.
			_ = fs.RemoveAll(tmp)
		}
	}()
	h, err = ReadStream(r, fs, tmp, cfg.ShardID, cfg.Options, stopc)
	if err != nil {
		return "", Header{}, err
	}
	if h.ImageAppliedIndex != h.SnapshotIndex {
		return "", Header{}, fmt.Errorf("%w: header says image %d, snapshot %d", ErrInexact, h.ImageAppliedIndex, h.SnapshotIndex)
	}
	if err := stampImage(tmp, cfg, h); err != nil {
		return "", Header{}, err
	}
	// From here the dir may be renamed; a leftover is swept on open.
	publishing = true
	name, err = cfg.Root.Publish(tmp)
	if err != nil {
		return "", Header{}, err
	}
	return name, h, nil
}

func stampImage(dir string, cfg InstallConfig, h Header) (err error) {
	eo := cfg.Engine
	eo.DisableCompactions = true
	eng, err := engine.Open(dir, eo)
	if err != nil {
		return classify("received image does not open", err)
	}
	defer func() {
		if cerr := eng.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("keel/snapshot: close received image: %w", cerr)
		}
	}()
	applied, err := eng.AppliedIndex()
	if err != nil {
		return classify("read applied index", err)
	}
	if applied != h.ImageAppliedIndex {
		return fmt.Errorf("%w: image holds applied index %d, header says %d", ErrInexact, applied, h.ImageAppliedIndex)
	}
	id, ok, err := eng.Identity()
	if err != nil {
		return classify("read identity", err)
	}
	if ok && id.ShardID != cfg.ShardID {
		return fmt.Errorf("%w: image records %s, this replica is in shard %d", ErrWrongShard, id, cfg.ShardID)
	}
	return eng.SetIdentity(engine.Identity{ShardID: cfg.ShardID, ReplicaID: cfg.ReplicaID})
}

// classify marks err as ErrCorrupt when Pebble or the engine says the data
// is bad, and leaves I/O errors as they are (a retry may succeed).
func classify(what string, err error) error {
	if pebble.IsCorruptionError(err) || errors.Is(err, engine.ErrCorrupt) || errors.Is(err, engine.ErrNotKeel) {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, what, err)
	}
	return fmt.Errorf("keel/snapshot: %s: %w", what, err)
}
