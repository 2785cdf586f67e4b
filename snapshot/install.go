package snapshot

import (
	"bytes"
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
	h, err = receive(r, cfg, tmp, stopc)
	if err != nil {
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

// receive runs Install's steps 1 to 3 into dir: the stream read and
// checked, the image exact, opened, checked and stamped.
func receive(r io.Reader, cfg InstallConfig, dir string, stopc <-chan struct{}) (Header, error) {
	h, err := ReadStream(r, cfg.Root.FS, dir, cfg.ShardID, cfg.Options, stopc)
	if err != nil {
		return Header{}, err
	}
	if h.ImageAppliedIndex != h.SnapshotIndex {
		return Header{}, fmt.Errorf("%w: header says image %d, snapshot %d", ErrInexact, h.ImageAppliedIndex, h.SnapshotIndex)
	}
	if err := stampImage(dir, cfg, h); err != nil {
		return Header{}, err
	}
	return h, nil
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

// Stage reads a stream from r while it is still arriving and builds the
// image aside, in a staged dir under cfg.Root (engine.Root.StageDir): the
// same checks as Install, steps 1 to 3, then the dir is sealed with the
// stream header, durably. Nothing live changes. It returns the staged
// dir's name and the header; Adopt publishes it when Raft hands the same
// snapshot to the state machine. On error the staged dir is removed.
//
// claim, if set, is called with the staged dir's name as soon as it exists,
// before anything is written in it, so the caller can keep it from being
// pruned while it is built.
func Stage(r io.Reader, cfg InstallConfig, stopc <-chan struct{}, claim func(name string)) (name string, h Header, err error) {
	// The header names the index the staged dir is named for.
	h, err = ReadHeader(r)
	if err != nil {
		return "", Header{}, err
	}
	staged := engine.NewStagedName(h.SnapshotIndex)
	if claim != nil {
		claim(staged)
	}
	sealed := false
	defer func() {
		if !sealed {
			_ = cfg.Root.RemoveStaged(staged)
		}
	}()
	imgDir, err := cfg.Root.StageDir(staged)
	if err != nil {
		return "", Header{}, err
	}
	if _, err := receive(io.MultiReader(bytes.NewReader(h.Encode()), r), cfg, imgDir, stopc); err != nil {
		return "", Header{}, err
	}
	if err := cfg.Root.SealStaged(staged, h.Encode()); err != nil {
		return "", Header{}, err
	}
	sealed = true
	return staged, h, nil
}

// ReadHeader reads and checks a stream's header from r.
func ReadHeader(r io.Reader) (Header, error) {
	var hb [HeaderSize]byte
	if err := readFull(r, hb[:], "header"); err != nil {
		return Header{}, err
	}
	return decodeHeader(hb[:])
}

// Encode returns the header as the stream carries it.
func (h Header) Encode() []byte { b := h.encode(); return b[:] }

// FindStaged looks under root for an image staged from a stream with
// header h (Stage) and returns its staged dir's name; the caller publishes
// it with engine.Root.AdoptStaged. found is false when there is none; the
// caller then installs from the stream. Any sealed image staged for
// h.SnapshotIndex from an identical header will do: Keel's images are
// exact, so every image at that index holds the same state, and the header
// names the shard, the index, the sender and the sizes.
func FindStaged(root engine.Root, h Header) (name string, found bool, err error) {
	list, err := root.ListStaged()
	if err != nil {
		return "", false, err
	}
	want := h.Encode()
	for i := len(list) - 1; i >= 0; i-- {
		if s := list[i]; s.Index == h.SnapshotIndex && bytes.Equal(s.Sealed, want) {
			return s.Name, true, nil
		}
	}
	return "", false, nil
}
