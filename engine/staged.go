package engine

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Staged images: an image built from a snapshot stream while the stream was
// still arriving, kept aside until Raft hands the same snapshot to the state
// machine (see package snapshot, "Receiving while the stream arrives").
//
// Layout: <root>/stg-<index, 20 digits>-<random>/ holds img/ (the image, a
// Pebble directory) and, once the image is complete and durable, SEALED
// (the stream header it was built from). A staged dir is never touched by
// Sweep (its prefix is not tmp-): it must survive restarts, because Raft may
// have recorded the snapshot before the process died and will ask for it
// again. Whoever owns the root removes staged dirs it no longer needs
// (RemoveStaged, PruneStaged).
const (
	stagedPrefix = "stg-"
	stagedImage  = "img"
	sealedFile   = "SEALED"
)

// Staged is one staged image.
type Staged struct {
	// Name is the staged dir's name under the root.
	Name string
	// Index is the snapshot index it was staged for.
	Index uint64
	// Sealed is the stream header recorded when the image was complete and
	// durable; nil for a dir whose staging did not finish.
	Sealed []byte
}

// NewStagedName names a fresh staged dir for a snapshot at index.
func NewStagedName(index uint64) string {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return fmt.Sprintf("%s%020d-%s", stagedPrefix, index, hex.EncodeToString(rnd[:]))
}

// StageDir creates the staged dir name (NewStagedName) with its empty image
// dir and returns the image dir's path.
func (r Root) StageDir(name string) (imageDir string, err error) {
	if _, ok := parseStagedName(name); !ok {
		return "", fmt.Errorf("keel/engine: %q is not a staged dir", name)
	}
	imageDir = r.FS.PathJoin(r.Dir, name, stagedImage)
	if err := r.FS.MkdirAll(imageDir, 0o755); err != nil {
		return "", fmt.Errorf("keel/engine: create %s: %w", imageDir, err)
	}
	return imageDir, nil
}

// SealStaged records header in the staged dir name, making its image
// eligible for AdoptStaged. The image must be complete and fsynced; Seal
// makes its dir entries durable: the staged dir, then the root.
func (r Root) SealStaged(name string, header []byte) error {
	dir := r.FS.PathJoin(r.Dir, name)
	tmp := r.FS.PathJoin(dir, sealedFile+".tmp")
	f, err := r.FS.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("keel/engine: seal %s: %w", name, err)
	}
	if _, err := f.Write(header); err != nil {
		_ = f.Close()
		return fmt.Errorf("keel/engine: seal %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("keel/engine: seal %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("keel/engine: seal %s: %w", name, err)
	}
	if err := r.FS.Rename(tmp, r.FS.PathJoin(dir, sealedFile)); err != nil {
		return fmt.Errorf("keel/engine: seal %s: %w", name, err)
	}
	if err := syncDir(r.FS, dir); err != nil {
		return err
	}
	return r.syncDir()
}

// ListStaged lists the staged dirs under the root, oldest index first.
func (r Root) ListStaged() ([]Staged, error) {
	names, err := r.FS.List(r.Dir)
	if err != nil {
		return nil, fmt.Errorf("keel/engine: list %s: %w", r.Dir, err)
	}
	var out []Staged
	for _, n := range names {
		idx, ok := parseStagedName(n)
		if !ok {
			continue
		}
		s := Staged{Name: n, Index: idx}
		if b, err := r.readSealed(n); err == nil {
			s.Sealed = b
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Index < out[j].Index || (out[i].Index == out[j].Index && out[i].Name < out[j].Name)
	})
	return out, nil
}

func parseStagedName(n string) (uint64, bool) {
	if !strings.HasPrefix(n, stagedPrefix) || len(n) < len(stagedPrefix)+21 || n[len(stagedPrefix)+20] != '-' {
		return 0, false
	}
	idx, err := strconv.ParseUint(n[len(stagedPrefix):len(stagedPrefix)+20], 10, 64)
	return idx, err == nil
}

// readSealed returns the SEALED record of a staged dir. The record is at
// most a stream header; a larger file is not Keel's.
func (r Root) readSealed(name string) ([]byte, error) {
	f, err := r.FS.Open(r.FS.PathJoin(r.Dir, name, sealedFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 4096))
}

// AdoptStaged publishes the image of the staged dir name as the live image
// and removes the staged dir. It returns the new image's name.
//
// The image is published as a copy made of hard links (a temp dir holding
// a link to every file of the staged image, fsynced, then Publish: rename,
// then the atomic CURRENT swap), not by renaming the staged image itself.
// Publish renames its dir into place before CURRENT names it, and a crash
// between the two leaves an image no CURRENT names, which the next Sweep
// removes. Had that been the staged image, the staged dir would be left
// with its SEALED record and no image, while Raft has recorded the
// snapshot whose staging file was cut (host/snaptee.go): every restart's
// RecoverFromSnapshot would fail, the replica lost for good. The chaos
// suite hit exactly that (a SIGKILL during an adoption; exit 70 at every
// start after). With links, the staged image stays whole until CURRENT
// names the new one, and the staged dir goes only after that; an adoption
// cut short is simply done again. An image is a flat directory of Pebble
// files (snapshot.ValidFileName), so linking its files copies it.
func (r Root) AdoptStaged(name string) (string, error) {
	src := r.FS.PathJoin(r.Dir, name, stagedImage)
	files, err := r.FS.List(src)
	if err != nil {
		return "", fmt.Errorf("keel/engine: staged image %s: %w", name, err)
	}
	tmp, err := r.TempDir("adopt")
	if err != nil {
		return "", err
	}
	published := false
	defer func() {
		if !published {
			_ = r.FS.RemoveAll(tmp)
		}
	}()
	for _, f := range files {
		if err := r.FS.Link(r.FS.PathJoin(src, f), r.FS.PathJoin(tmp, f)); err != nil {
			return "", fmt.Errorf("keel/engine: link staged %s/%s: %w", name, f, err)
		}
	}
	if err := syncDir(r.FS, tmp); err != nil {
		return "", err
	}
	// From here the temp dir may be renamed; a leftover is swept on open.
	published = true
	img, err := r.Publish(tmp)
	if err != nil {
		return "", err
	}
	// Best effort: a staged dir left behind is pruned later (its index is
	// at or below the applied index now).
	_ = r.FS.RemoveAll(r.FS.PathJoin(r.Dir, name))
	return img, nil
}

// RemoveStaged deletes a staged dir.
func (r Root) RemoveStaged(name string) error {
	if _, ok := parseStagedName(name); !ok {
		return fmt.Errorf("keel/engine: %q is not a staged dir", name)
	}
	return r.FS.RemoveAll(r.FS.PathJoin(r.Dir, name))
}

// PruneStaged removes the staged dirs no longer needed once the replica's
// applied index is applied: those staged for an index at or below it, and
// those never sealed, except the ones keep names (stagings in progress).
// It returns the staged dirs it left.
func (r Root) PruneStaged(applied uint64, keep func(name string) bool) ([]Staged, error) {
	list, err := r.ListStaged()
	if err != nil {
		return nil, err
	}
	left := list[:0]
	for _, s := range list {
		if (keep == nil || !keep(s.Name)) && (s.Index <= applied || s.Sealed == nil) {
			if err := r.RemoveStaged(s.Name); err != nil {
				return nil, err
			}
			continue
		}
		left = append(left, s)
	}
	return left, nil
}
