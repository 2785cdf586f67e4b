package engine

import (
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/atomicfs"
)

// The closed record lets a host learn a tablet's applied index without
// opening Pebble (see the package documentation, "Closed tablets").
const (
	closedFile    = "CLOSED"
	closedTmpFile = "CLOSED.tmp"
	closedMagic   = "keel-closed"
	closedVersion = "1"
	// manifestMarker is Pebble's marker naming the live MANIFEST
	// (version_set.go's manifestMarkerName in v2.1.7).
	manifestMarker = "manifest"
	// maxClosedRecord bounds what ReadClosed reads of the file.
	maxClosedRecord = 512
)

// Closed is what a tablet recorded when it was last closed cleanly.
type Closed struct {
	// Image is the image directory the record describes.
	Image string
	// Applied is the image's applied index at the close.
	Applied uint64
	// Identity is the shard and replica the image records; HasIdentity is
	// false for an image that records none.
	Identity    Identity
	HasIdentity bool
}

// closedState is a Closed with the Pebble state it was read from.
type closedState struct {
	Closed
	manifest     string
	manifestSize int64
}

func (c closedState) encode() []byte {
	hasID := "0"
	if c.HasIdentity {
		hasID = "1"
	}
	body := strings.Join([]string{closedMagic, closedVersion, c.Image,
		strconv.FormatUint(c.Applied, 10), hasID,
		strconv.FormatUint(c.Identity.ShardID, 10), strconv.FormatUint(c.Identity.ReplicaID, 10),
		c.manifest, strconv.FormatInt(c.manifestSize, 10)}, " ")
	return []byte(fmt.Sprintf("%s %08x\n", body, crc32.ChecksumIEEE([]byte(body))))
}

func decodeClosed(b []byte) (closedState, bool) {
	line, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return closedState{}, false
	}
	i := strings.LastIndexByte(line, ' ')
	if i < 0 {
		return closedState{}, false
	}
	body, sum := line[:i], line[i+1:]
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil || uint32(want) != crc32.ChecksumIEEE([]byte(body)) {
		return closedState{}, false
	}
	f := strings.Split(body, " ")
	if len(f) != 9 || f[0] != closedMagic || f[1] != closedVersion {
		return closedState{}, false
	}
	var c closedState
	var errs [4]error
	c.Image = f[2]
	c.Applied, errs[0] = strconv.ParseUint(f[3], 10, 64)
	c.HasIdentity = f[4] == "1"
	c.Identity.ShardID, errs[1] = strconv.ParseUint(f[5], 10, 64)
	c.Identity.ReplicaID, errs[2] = strconv.ParseUint(f[6], 10, 64)
	c.manifest = f[7]
	c.manifestSize, errs[3] = strconv.ParseInt(f[8], 10, 64)
	for _, err := range errs {
		if err != nil {
			return closedState{}, false
		}
	}
	if _, ok := parseImageName(c.Image); !ok || (f[4] != "0" && f[4] != "1") {
		return closedState{}, false
	}
	return c, true
}

// manifestState is the live MANIFEST of the Pebble database in dir and its
// size: every writable Pebble open starts a new MANIFEST (a new file
// number, never reused) and every flush or compaction appends to it, so
// the pair changes whenever the database's durable state can have.
func manifestState(fs vfs.FS, dir string) (string, int64, error) {
	name, err := atomicfs.ReadMarker(fs, dir, manifestMarker)
	if err != nil {
		return "", 0, err
	}
	if name == "" || strings.ContainsAny(name, "/ ") {
		return "", 0, fmt.Errorf("%w: manifest marker in %s names %q", ErrCorrupt, dir, name)
	}
	st, err := fs.Stat(fs.PathJoin(dir, name))
	if err != nil {
		return "", 0, err
	}
	return name, st.Size(), nil
}

// ReadClosed returns the closed record of the root's live image when it
// still describes that image exactly: the record is intact, CURRENT names
// its image, and the image's live MANIFEST is the one the record names at
// the size it had. ok is false otherwise (no record, a damaged one, or a
// tablet opened for writing since, which Pebble gives a new MANIFEST), and
// the caller opens the tablet to learn its state. Nothing here writes.
func (r Root) ReadClosed() (Closed, bool) {
	f, err := r.FS.Open(r.FS.PathJoin(r.Dir, closedFile))
	if err != nil {
		return Closed{}, false
	}
	b, err := io.ReadAll(io.LimitReader(f, maxClosedRecord))
	_ = f.Close()
	if err != nil {
		return Closed{}, false
	}
	c, ok := decodeClosed(b)
	if !ok {
		return Closed{}, false
	}
	cur, err := r.Current()
	if err != nil || cur != c.Image {
		return Closed{}, false
	}
	m, size, err := manifestState(r.FS, r.FS.PathJoin(r.Dir, cur))
	if err != nil || m != c.manifest || size != c.manifestSize {
		return Closed{}, false
	}
	return c.Closed, true
}

// recordClosed reads what the closed record needs while the database is
// still open and quiescent: the applied index and identity. The caller
// has flushed everything and holds off every writer.
func (e *Engine) recordClosed() (closedState, error) {
	applied, err := readApplied(e.db)
	if err != nil {
		return closedState{}, err
	}
	c := closedState{Closed: Closed{Image: e.fs.PathBase(e.dir), Applied: applied}}
	v, closer, err := e.db.Get(keyIdentity)
	if err == nil {
		c.Identity, err = decodeIdentity(v)
		_ = closer.Close()
		if err != nil {
			return closedState{}, err
		}
		c.HasIdentity = true
	}
	return c, nil
}

// writeClosed writes c for the image, closed a moment ago, as the root's
// closed record. Nothing is fsynced: the record is trusted only while the
// image's MANIFEST (which Pebble fsynced) is exactly the one it names, so
// a record lost or torn in a crash only costs the next open its shortcut,
// and one left from an earlier close never matches a later state.
func (e *Engine) writeClosed(c closedState) error {
	m, size, err := manifestState(e.fs, e.dir)
	if err != nil {
		return err
	}
	c.manifest, c.manifestSize = m, size
	root := e.fs.PathDir(e.dir)
	tmp := e.fs.PathJoin(root, closedTmpFile)
	f, err := e.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := f.Write(c.encode()); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return e.fs.Rename(tmp, e.fs.PathJoin(root, closedFile))
}
