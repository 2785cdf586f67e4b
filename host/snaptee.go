package host

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/keel-db/keel/internal/gbsnap"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Staging a received image while its stream arrives.
//
// Dragonboat writes every chunk of a snapshot stream to a staging file,
// fsyncs the whole file on the last chunk, and only then hands the snapshot
// to Raft, whose snapshot worker calls RecoverFromSnapshot on a reader over
// that file; the install then writes every byte again. Catch-up by
// snapshot thus wrote each byte twice and could not pass half the disk's
// write bandwidth.
//
// The tee removes the second write from the critical path and the first
// from the disk: as each chunk passes PeerGuard's chunk handler it is also
// fed to the receiving replica's state machine (imageStager), which decodes
// Dragonboat's framing (gbsnap.ReceivedPayload) and builds the image aside, fully
// checked, in a staged dir (sm.StageImage, snapshot.Stage). When the last
// chunk arrives the tee waits until the staged image is complete and
// durable, and only then shrinks Dragonboat's staging file to the part
// RecoverFromSnapshot reads (its header and first block, which hold the
// stream header) before Dragonboat's handler fsyncs it. The rest of the
// file never reaches the disk: its pages were dirty in the page cache and
// are dropped by the truncation. RecoverFromSnapshot then reads the stream
// header, finds the staged image built from the same header and publishes
// it (snapshot.Adopt): a rename and the CURRENT swap.
//
// Why it is safe:
//   - The staged image is sealed (fsynced, SEALED record written and
//     fsynced) before the staging file is shrunk, and the staging file is
//     shrunk before Dragonboat fsyncs it and hands the snapshot to Raft. So
//     whenever Raft may have recorded the snapshot, the image is durable.
//   - A staged image is removed only once the replica's applied index
//     reached its index, or when its stream was refused; Open keeps staged
//     images above the applied index, so RecoverFromSnapshot after a crash
//     finds them.
//   - Any failure on the tee's side (a format it does not decode, a check
//     that fails, no state machine, a stream cut off) leaves Dragonboat's
//     file whole, and the snapshot takes the ordinary path: Install reads
//     the stream from Dragonboat's staged copy.
//
// The truncation finds Dragonboat's staging file by its directory layout
// (NodeHostDir/<host>/<deployment>/snapshot-part-N/snapshot-S-R/
// snapshot-<index, 16 hex digits>-<from>.receiving/<chunk's file name>),
// which is private to Dragonboat; it shrinks the file only when exactly one
// file matches and its size equals the bytes the tee saw, and otherwise
// leaves it whole (the catch-up is then as before, only overlapped).

// imageStager is what the tee needs of a replica's state machine
// (*sm.StateMachine).
type imageStager interface {
	StageImage(r io.Reader, stopc <-chan struct{}) (name string, index uint64, err error)
	DropStagedImage(name string)
}

// stagerLookup returns the state machine of (shard, replica) on this host,
// or nil.
type stagerLookup func(shardID, replicaID uint64) imageStager

// errTeeAborted stops a tee whose stream was refused or went quiet.
var errTeeAborted = errors.New("keel/host: snapshot stream abandoned")

// tee feeds one stream's chunks to a state machine's StageImage.
//
// Invariants: fed is the number of chunk bytes Dragonboat was given so far
// for this stream (the staging file's size); name and err are written by
// the staging goroutine before done is closed and read only after.
type tee struct {
	st imageStager
	pw *io.PipeWriter
	// queue carries chunk data to the pump, which writes it into pw: the
	// handler waits for the staging only when teeQueue chunks are
	// queued, so Dragonboat's own write of a chunk overlaps the staging of
	// the ones before. pumped is closed when the pump has ended.
	queue    chan []byte
	pumped   chan struct{}
	stopc    chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	watchdog *time.Timer
	// file is the base name of Dragonboat's staging file (the first chunk's
	// Filepath).
	file string

	// Used only by the chunk handler's goroutine (one call at a time per
	// stream).
	fed    int64
	closed bool
	// failed is set by the pump when a write into pw failed (the staging
	// ended early); read after pumped is closed.
	failed bool

	name string
	err  error
}

// teeIdle aborts a tee no chunk reached for this long (the sender died);
// teeBusy bounds one handler call.
const (
	teeIdle = streamIdle
	teeBusy = streamBusyMax
	// teeQueue is how many chunks (2 MiB each) may wait for the staging.
	teeQueue = 4
	// maxTees bounds the streams a NodeHost stages at once. Each holds
	// about 14 MiB (the queue, the decoder's block buffers, Snappy's and
	// the stream reader's); a host restarted with many shards behind
	// receives many streams at once, and the ones past the bound take
	// Dragonboat's ordinary path.
	maxTees = 8
)

// teeSlots counts the tees running in a process (all its NodeHosts).
var teeSlots = make(chan struct{}, maxTees)

// startTee starts staging the stream whose first chunk is first, or
// returns nil when maxTees streams are being staged already.
func startTee(st imageStager, first pb.Chunk) *tee {
	select {
	case teeSlots <- struct{}{}:
	default:
		return nil
	}
	pr, pw := io.Pipe()
	t := &tee{st: st, pw: pw, queue: make(chan []byte, teeQueue), pumped: make(chan struct{}),
		stopc: make(chan struct{}), done: make(chan struct{}), file: filepath.Base(first.Filepath)}
	t.watchdog = time.AfterFunc(teeBusy, t.abort)
	go t.pump()
	go func() {
		defer func() {
			close(t.done)
			// The slot is free once the pump no longer holds chunks.
			<-t.pumped
			<-teeSlots
		}()
		t.name, t.err = stageFrom(st, pr, t.stopc)
		if t.err != nil {
			pr.CloseWithError(t.err)
		}
	}()
	return t
}

// stageFrom decodes Dragonboat's framing from pr and stages the image it
// carries; it reads pr to its end, so that the tail is checked too.
func stageFrom(st imageStager, pr *io.PipeReader, stopc <-chan struct{}) (string, error) {
	r, err := gbsnap.ReceivedPayload(pr)
	if err != nil {
		return "", err
	}
	name, _, err := st.StageImage(r, stopc)
	if err != nil {
		return "", err
	}
	n, err := io.Copy(io.Discard, r)
	if err == nil && n > 0 {
		err = fmt.Errorf("%w: %d bytes after the state machine's stream", gbsnap.ErrDamaged, n)
	}
	if err != nil {
		st.DropStagedImage(name)
		return "", err
	}
	return name, nil
}

// pump writes the queued chunk data into the pipe until the queue is
// closed (or the tee aborted); after a failed write it only drains the
// queue.
func (t *tee) pump() {
	defer close(t.pumped)
	for {
		select {
		case data, ok := <-t.queue:
			if !ok {
				return
			}
			if t.failed {
				continue
			}
			if _, err := t.pw.Write(data); err != nil {
				t.failed = true
			}
		case <-t.stopc:
			// Aborted: nothing more reaches the staging.
			t.failed = true
			return
		}
	}
}

// feed queues a chunk's data for the staging. Chunk data is the handler's
// own (Dragonboat's Chunk.Unmarshal copies it), so it is queued as is.
func (t *tee) feed(data []byte) {
	t.fed += int64(len(data))
	if len(data) == 0 || t.closed {
		return
	}
	select {
	case t.queue <- data:
	case <-t.stopc:
	}
}

// finish ends the stream and waits for the staging's outcome.
func (t *tee) finish() (name string, err error) {
	t.watchdog.Stop()
	t.closed = true
	close(t.queue)
	<-t.pumped
	if t.failed {
		_ = t.pw.CloseWithError(errTeeAborted)
	} else {
		_ = t.pw.Close()
	}
	<-t.done
	if t.err != nil {
		return "", t.err
	}
	return t.name, nil
}

// commit keeps the staged image for good: a later abort does nothing. It
// fails when an abort came first.
func (t *tee) commit() bool {
	committed := false
	t.stopOnce.Do(func() {
		committed = true
		t.watchdog.Stop()
	})
	return committed
}

// abort stops the staging and, once it has ended, removes what it built.
// It does not wait and may be called from anywhere, any number of times.
func (t *tee) abort() {
	t.stopOnce.Do(func() {
		t.watchdog.Stop()
		close(t.stopc)
		_ = t.pw.CloseWithError(errTeeAborted)
		go func() {
			<-t.done
			if t.err == nil && t.name != "" {
				t.st.DropStagedImage(t.name)
			}
		}()
	})
}

// active re-arms the watchdog: busy while a handler call runs, idle after.
func (t *tee) active(busy bool) {
	if busy {
		t.watchdog.Reset(teeBusy)
	} else {
		t.watchdog.Reset(teeIdle)
	}
}

// shrinkStaging cuts Dragonboat's staging file for the stream of c down to
// the part RecoverFromSnapshot reads: Dragonboat's header, its first block
// (which holds the session record and Keel's stream header) and the 16
// bytes Dragonboat's reader sets aside as the tail. It returns the bytes
// cut, 0 when it left the file whole.
func shrinkStaging(nodeHostDir string, c pb.Chunk, file string, size int64) (int64, error) {
	const keep = gbsnap.ReceivedKeep
	if size <= keep || nodeHostDir == "" || strings.ContainsAny(nodeHostDir, `*?[\`) {
		return 0, nil
	}
	pattern := filepath.Join(nodeHostDir, "*", "*", "snapshot-part-*",
		fmt.Sprintf("snapshot-%d-%d", c.ShardID, c.ReplicaID),
		fmt.Sprintf("snapshot-%016X-%d.receiving", c.Index, c.From), file)
	matches, err := filepath.Glob(pattern)
	if err != nil || len(matches) != 1 {
		return 0, err
	}
	fi, err := os.Stat(matches[0])
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		return 0, err
	}
	if err := os.Truncate(matches[0], keep); err != nil {
		return 0, err
	}
	return size - keep, nil
}
