package host

import (
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keel-db/keel/internal/gbsnap"
	"github.com/lni/vfs"
)

// Dropping the staged stream's bytes as Dragonboat writes them.
//
// While the tee stages an image (snaptee.go), Dragonboat still writes the
// whole stream to its staging file, which the tee cuts to its first
// gbsnap.ReceivedKeep bytes at the end: the bytes never reach the disk, but
// each one is still copied into the page cache by the chunk handler, on
// the receive path's one goroutine. Measured in a catch-up of a 211 MB
// image, that write was 300 ms of CPU, the largest cost of the receive
// path, where the stream's speed is set.
//
// stagingFS, in the filesystem Dragonboat is given (DiskFullFS), drops them
// instead: a write to the staging file of a stream the transport has
// marked (markDiscard) keeps what falls in the first ReceivedKeep bytes
// and extends the file to its full size with ftruncate for the rest, so the
// file is sparse, the size Dragonboat and the tee expect, and its first
// bytes are the stream's. The stream is then marked holey.
//
// Why it is safe: a holey staging file must never reach Raft, since the
// ordinary install path would read the holes. The transport hands the
// stream's last chunk to Dragonboat, which then hands the file to Raft,
// only when the tee staged the image and committed it (RecoverFromSnapshot
// then reads only the first ReceivedKeep bytes and adopts the staged
// image, as it does after the cut). In every other case of a holey stream
// (the staging failed or was aborted, or the stream was forgotten by the
// transport) the last chunk is refused: Dragonboat drops the stream, the
// sender reports it failed and the leader sends it again later, and the
// transport does not mark that replica's next stream, which then takes the
// ordinary path if the staging fails again.
//
// The staging file is found by Dragonboat's private layout, as the cut
// finds it (snaptee.go): NodeHostDir/<host>/<deployment>/snapshot-part-N/
// snapshot-S-R/snapshot-<index, 16 hex digits>-<from>.receiving/<file>.
// A path that does not parse, or a file without ftruncate (an in-memory
// FS), is written in full.

// discardMarks are the streams whose staging files may be holey: marked
// by the transport when a tee starts, set holey by stagingFS. Keyed by the
// stream (its shard, receiving replica, sender and index: one NodeHost
// receives a given stream) and checked against the NodeHost's directory.
var discardMarks struct {
	// mu guards m.
	mu sync.Mutex
	m  map[streamKey]*discardMark
}

// discardMark is one stream's. Its fields are guarded by discardMarks.mu.
type discardMark struct {
	nodeHostDir string
	// since is when the stream was marked.
	since time.Time
	// holey is set once a byte of the staging file was dropped.
	holey bool
	// dropped counts the bytes not written.
	dropped int64
}

// markDiscard marks stream k, received by the NodeHost in nodeHostDir:
// stagingFS may drop its staging file's bytes from here on. A mark for the
// same stream before (Dragonboat starts the stream over, recreating the
// file) is replaced.
//
// A holey mark outlives its stream when the transport forgot the stream
// before its end (chunk refuses its late chunks by the mark); one older
// than discardMarkTTL is dropped here, far past Dragonboat's own timeout
// for a stream's chunks (SnapshotChunkTimeoutTick, 900 of its one-second
// ticks), after which it ignores such chunks itself.
func markDiscard(nodeHostDir string, k streamKey) *discardMark {
	now := time.Now()
	d := &discardMark{nodeHostDir: nodeHostDir, since: now}
	discardMarks.mu.Lock()
	defer discardMarks.mu.Unlock()
	if discardMarks.m == nil {
		discardMarks.m = make(map[streamKey]*discardMark)
	}
	for old, m := range discardMarks.m {
		if now.Sub(m.since) > discardMarkTTL {
			delete(discardMarks.m, old)
		}
	}
	discardMarks.m[k] = d
	return d
}

// discardMarkTTL bounds how long a mark is kept (markDiscard).
const discardMarkTTL = time.Hour

// unmarkDiscard forgets k's mark if it is still d, and reports whether d
// went holey (false for a nil d).
func unmarkDiscard(k streamKey, d *discardMark) (holey bool) {
	discardMarks.mu.Lock()
	defer discardMarks.mu.Unlock()
	if d == nil {
		d = discardMarks.m[k]
		if d == nil {
			return false
		}
	}
	if discardMarks.m[k] == d {
		delete(discardMarks.m, k)
	}
	return d.holey
}

// isHoley reports whether d went holey.
func (d *discardMark) isHoley() bool {
	discardMarks.mu.Lock()
	defer discardMarks.mu.Unlock()
	return d.holey
}

// droppedBytes returns how many bytes were not written.
func (d *discardMark) droppedBytes() int64 {
	discardMarks.mu.Lock()
	defer discardMarks.mu.Unlock()
	return d.dropped
}

// markFor returns the mark of the stream whose staging file path is, or
// nil.
func markFor(path string) *discardMark {
	k, ok := parseStagingPath(path)
	if !ok {
		return nil
	}
	discardMarks.mu.Lock()
	defer discardMarks.mu.Unlock()
	d := discardMarks.m[k]
	if d == nil || d.nodeHostDir == "" || !strings.HasPrefix(filepath.Clean(path), filepath.Clean(d.nodeHostDir)+string(filepath.Separator)) {
		return nil
	}
	return d
}

// parseStagingPath reads the stream key from a staging file's path:
// .../snapshot-S-R/snapshot-<index, 16 hex digits>-<from>.receiving/<file>.
func parseStagingPath(path string) (streamKey, bool) {
	dir := filepath.Dir(path)
	var k streamKey
	ok := true
	pair := func(s, prefix string, hexFirst bool) (a, b uint64) {
		s, found := strings.CutPrefix(s, prefix)
		x, y, two := strings.Cut(s, "-")
		if !found || !two || (hexFirst && len(x) != 16) {
			ok = false
			return 0, 0
		}
		base := 10
		if hexFirst {
			base = 16
		}
		a, err1 := strconv.ParseUint(x, base, 64)
		b, err2 := strconv.ParseUint(y, 10, 64)
		ok = ok && err1 == nil && err2 == nil
		return a, b
	}
	k.shard, k.replica = pair(filepath.Base(filepath.Dir(dir)), "snapshot-", false)
	recv, isRecv := strings.CutSuffix(filepath.Base(dir), ".receiving")
	k.index, k.from = pair(recv, "snapshot-", true)
	if !ok || !isRecv {
		return streamKey{}, false
	}
	return k, true
}

// stagingFS drops the marked streams' bytes past ReceivedKeep (see above).
type stagingFS struct {
	vfs.FS
}

func (fs *stagingFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	if err != nil {
		return f, err
	}
	return wrapStaging(f, markFor(name), 0), nil
}

func (fs *stagingFS) OpenForAppend(name string) (vfs.File, error) {
	f, err := fs.FS.OpenForAppend(name)
	if err != nil {
		return f, err
	}
	d := markFor(name)
	if d == nil {
		return f, nil
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return wrapStaging(f, d, st.Size()), nil
}

// truncater is the part of *os.File stagingFile needs.
type truncater interface{ Truncate(size int64) error }

// wrapStaging returns f, of size bytes, as a marked stream's staging file,
// or f itself when there is no mark or f cannot be truncated.
func wrapStaging(f vfs.File, d *discardMark, size int64) vfs.File {
	if d == nil {
		return f
	}
	if _, ok := f.(truncater); !ok {
		return f
	}
	return &stagingFile{File: f, mark: d, size: size}
}

// stagingFile is a marked stream's staging file, opened for appending: size
// is its size, where the next write goes.
type stagingFile struct {
	vfs.File
	mark *discardMark
	size int64
}

func (f *stagingFile) Write(p []byte) (int, error) {
	const keep = gbsnap.ReceivedKeep
	n := 0
	if f.size < keep {
		w := min(int64(len(p)), keep-f.size)
		m, err := f.File.Write(p[:w])
		f.size += int64(m)
		n += m
		if err != nil {
			return n, err
		}
	}
	if rest := len(p) - n; rest > 0 {
		// Mark first: a file that may have a hole is holey.
		discardMarks.mu.Lock()
		f.mark.holey = true
		f.mark.dropped += int64(rest)
		discardMarks.mu.Unlock()
		if err := f.File.(truncater).Truncate(f.size + int64(rest)); err != nil {
			return n, err
		}
		f.size += int64(rest)
		n += rest
	}
	return n, nil
}
