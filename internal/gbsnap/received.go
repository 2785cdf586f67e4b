package gbsnap

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"

	"github.com/golang/snappy"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// A snapshot stream as Dragonboat sends it to a follower (internal/rsm
// chunkwriter.go; snapshotter.go Stream) is an envelope too: the
// concatenated Data of its chunks is exactly the file the receiver stages.
// It differs from an export's .gbsnap in its header, written before the
// payload is known: the marshalled pb.SnapshotHeader has no HeaderChecksum
// and a PayloadChecksum of four zero bytes, and the header's CRC-32 (IEEE,
// big-endian) follows the marshalled bytes (in what an export leaves as
// padding). Blocks and tail are as in an export, and the session table of
// a stream is always empty.
//
// ReceivedPayload reads such a stream as it arrives, when its size is not
// known yet: it holds back one block and a tail's worth of bytes to tell
// the last block and the tail from the rest.

// ReceivedPayload checks the header of a streamed snapshot read from r and
// returns a reader of what the state machine's SaveSnapshot wrote (Keel's
// stream), its session table skipped. Reading it to io.EOF checks every
// block checksum and the tail; any damage is an error wrapping ErrDamaged,
// and nothing panics on any input. It buffers one block.
func ReceivedPayload(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, envBlockSize+envChecksumSize+envTailSize+1)
	hb := make([]byte, envHeaderSize)
	if _, err := io.ReadFull(br, hb); err != nil {
		if isShort(err) {
			return nil, envErr("stream ends inside the header")
		}
		return nil, err
	}
	sh, err := parseStreamHeader(hb)
	if err != nil {
		return nil, err
	}
	var payload io.Reader = &streamBlocks{r: br}
	if sh.CompressionType == pb.Snappy {
		payload = snappy.NewReader(payload)
	}
	perr := func(what string, err error) error {
		if errors.Is(err, ErrDamaged) {
			return err
		}
		return envErr("%s: %v", what, err)
	}
	if _, err := readSessions(payload, perr); err != nil {
		return nil, err
	}
	return payload, nil
}

// parseStreamHeader checks and decodes a streamed snapshot's header.
func parseStreamHeader(b []byte) (pb.SnapshotHeader, error) {
	var sh pb.SnapshotHeader
	n := binary.LittleEndian.Uint64(b[:8])
	if n == 0 || n > envHeaderSize-8-envChecksumSize {
		return sh, envErr("stream header length %d out of range", n)
	}
	data := b[8 : 8+n]
	crc := b[8+n : 8+n+envChecksumSize]
	if got := crc32.ChecksumIEEE(data); binary.BigEndian.Uint32(crc) != got {
		return sh, envErr("stream header checksum %x, computed %08x", crc, got)
	}
	if err := sh.Unmarshal(data); err != nil {
		return sh, envErr("stream header does not decode: %v", err)
	}
	for _, c := range b[8+n+envChecksumSize:] {
		if c != 0 {
			return sh, envErr("non-zero bytes in the stream header padding")
		}
	}
	if sh.Version != EnvelopeVersion || sh.ChecksumType != pb.CRC32IEEE {
		return sh, envErr("stream envelope version %d, checksum type %d", sh.Version, sh.ChecksumType)
	}
	if sh.CompressionType != pb.NoCompression && sh.CompressionType != pb.Snappy {
		return sh, envErr("unknown compression type %d", sh.CompressionType)
	}
	return sh, nil
}

// streamBlocks yields the payload of a stream's blocks, checking each
// block's checksum and, at the end, the tail.
type streamBlocks struct {
	r *bufio.Reader
	// cur is the rest of the current block's payload, in buf.
	cur []byte
	buf []byte
	// total counts block bytes (with checksums) read, for the tail.
	total  uint64
	blocks int
	done   bool
}

func (b *streamBlocks) Read(p []byte) (int, error) {
	for len(b.cur) == 0 {
		if b.done {
			return 0, io.EOF
		}
		if err := b.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.cur)
	b.cur = b.cur[n:]
	return n, nil
}

// next loads the next block. A full block is known not to be the last one
// only once more than a tail follows it, so it peeks one byte further.
func (b *streamBlocks) next() error {
	const full = envBlockSize + envChecksumSize
	win, err := b.r.Peek(full + envTailSize + 1)
	if err == nil {
		// cur is empty, so the buffer it pointed into is free again.
		if b.buf == nil {
			b.buf = make([]byte, full+envTailSize+1)
		}
		blk := b.buf[:copy(b.buf, win[:full])]
		if _, err := b.r.Discard(full); err != nil {
			return err
		}
		return b.take(blk)
	}
	if !errors.Is(err, io.EOF) {
		return err
	}
	// The end: win is all that is left, the last block (if any) and the
	// tail.
	rest := append(b.buf[:0], win...)
	if _, err := b.r.Discard(len(rest)); err != nil {
		return err
	}
	b.done = true
	if len(rest) < envTailSize {
		return envErr("stream ends without a tail")
	}
	tail := rest[len(rest)-envTailSize:]
	if last := rest[:len(rest)-envTailSize]; len(last) > 0 {
		if err := b.take(last); err != nil {
			return err
		}
	}
	if !bytes.Equal(tail[8:], envMagic) {
		return envErr("bad tail magic %x", tail[8:])
	}
	if got := binary.LittleEndian.Uint64(tail[:8]); got != b.total {
		return envErr("tail says %d bytes of blocks, the stream held %d", got, b.total)
	}
	return nil
}

func (b *streamBlocks) take(blk []byte) error {
	if len(blk) <= envChecksumSize {
		return envErr("last block of %d bytes is too short to hold data and a checksum", len(blk))
	}
	data, crc := blk[:len(blk)-envChecksumSize], blk[len(blk)-envChecksumSize:]
	if got := crc32.ChecksumIEEE(data); binary.BigEndian.Uint32(crc) != got {
		return envErr("block %d checksum %x, computed %08x", b.blocks, crc, got)
	}
	b.blocks++
	b.total += uint64(len(blk))
	b.cur = data
	return nil
}

// ReceivedKeep is how many leading bytes of a received stream's staged file
// Dragonboat reads when the state machine reads no further than the start
// of its own stream: the header, the first block (which holds the session
// table and, for Keel, its stream header: both lie far inside 2 MiB of
// payload) and the 16 bytes Dragonboat's reader sets aside as the tail
// (internal/rsm snapshotio.go getHeader: the payload is the file size less
// the header and the tail).
const ReceivedKeep = envHeaderSize + envBlockSize + envChecksumSize + envTailSize
