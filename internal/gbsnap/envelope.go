package gbsnap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/golang/snappy"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Envelope constants (see the package documentation).
const (
	envHeaderSize   = 1024
	envBlockSize    = 2 << 20
	envChecksumSize = 4
	envTailSize     = 16
	// EnvelopeVersion is the only envelope version this package reads and
	// writes.
	EnvelopeVersion = 2
	// lruMaxSessionCount is settings.Hard.LRUMaxSessionCount's default,
	// the capacity Dragonboat writes into an empty session table.
	lruMaxSessionCount = 4096
	// Bounds on the session table of an untrusted file: Keel uses no-op
	// sessions, so any table at all is small.
	maxSessions      = 1 << 16
	maxSessionRecord = 1 << 20
)

var envMagic = []byte{0x3F, 0x5B, 0xCB, 0xF1, 0xFA, 0xBA, 0x81, 0x9F}

// envErr reports a damaged or foreign .gbsnap file.
func envErr(format string, args ...any) error {
	return fmt.Errorf("%w: bad Dragonboat snapshot file: %s", ErrDamaged, fmt.Sprintf(format, args...))
}

// isShort reports an error that means the bytes ran out.
func isShort(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Envelope is what a verified .gbsnap says about itself.
type Envelope struct {
	Version         uint64 `json:"version"`
	Compression     string `json:"compression"`
	FileSize        uint64 `json:"file_size"`
	Blocks          int    `json:"blocks"`
	PayloadChecksum string `json:"payload_checksum"`
	Sessions        uint64 `json:"sessions"`
	// Checksum is the payload checksum as pb.Snapshot.Checksum holds it.
	Checksum []byte `json:"-"`
}

// parseEnvHeader checks and decodes the 1024-byte header.
func parseEnvHeader(b []byte) (pb.SnapshotHeader, error) {
	var sh pb.SnapshotHeader
	if len(b) < envHeaderSize {
		return sh, envErr("%d bytes, shorter than the %d-byte header", len(b), envHeaderSize)
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n == 0 || n > envHeaderSize-8-4 {
		return sh, envErr("header length %d out of range (not a .gbsnap file?)", n)
	}
	data := b[8 : 8+n]
	if err := sh.Unmarshal(data); err != nil {
		return sh, envErr("header does not decode: %v", err)
	}
	want := sh.HeaderChecksum
	sh.HeaderChecksum = nil
	raw, err := sh.Marshal()
	if err != nil {
		return sh, envErr("header does not re-encode: %v", err)
	}
	if got := crc32.ChecksumIEEE(raw); !bytes.Equal(binary.BigEndian.AppendUint32(nil, got), want) {
		return sh, envErr("header checksum %x, computed %08x", want, got)
	}
	sh.HeaderChecksum = want
	// The checksum covers the decoded fields, not the bytes: a flip that
	// still decodes to the same fields (a field number turned unknown and
	// skipped, a varint made non-canonical) would pass it. Dragonboat
	// writes the canonical encoding, so anything else is damage.
	if full, err := sh.Marshal(); err != nil || !bytes.Equal(full, data) {
		return sh, envErr("header bytes are not the canonical encoding of its fields")
	}
	// Dragonboat's reader treats 4 bytes after the header as an optional
	// CRC (zero when absent) and the rest as padding.
	for _, c := range b[8+n : envHeaderSize] {
		if c != 0 {
			return sh, envErr("non-zero bytes in the header padding")
		}
	}
	if sh.Version != EnvelopeVersion {
		return sh, envErr("envelope version %d, Keel reads version %d", sh.Version, EnvelopeVersion)
	}
	if sh.ChecksumType != pb.CRC32IEEE {
		return sh, envErr("unknown checksum type %d", sh.ChecksumType)
	}
	if sh.CompressionType != pb.NoCompression && sh.CompressionType != pb.Snappy {
		return sh, envErr("unknown compression type %d", sh.CompressionType)
	}
	return sh, nil
}

// blockReader yields the payload of the envelope's blocks in order,
// checking each block's CRC and summing the checksums. It holds one block.
type blockReader struct {
	r      io.Reader
	left   int64 // block bytes (with checksums) not yet read
	buf    []byte
	cur    []byte
	blocks int
	// sum hashes the block checksums seen (the payload checksum).
	sum interface {
		io.Writer
		Sum([]byte) []byte
	}
	// ioErr is the first filesystem error, so a failure further up (in
	// Snappy's reader or the stream reader, which may reword it) is
	// reported as the I/O error it is, not as damage.
	ioErr error
}

func newBlockReader(r io.Reader, blockBytes int64) *blockReader {
	// A small file needs no full-size block buffer.
	n := min(blockBytes, envBlockSize+envChecksumSize)
	return &blockReader{r: r, left: blockBytes, buf: make([]byte, n), sum: crc32.NewIEEE()}
}

func (br *blockReader) Read(p []byte) (int, error) {
	for len(br.cur) == 0 {
		if br.left == 0 {
			return 0, io.EOF
		}
		n := min(int64(len(br.buf)), br.left)
		if n <= envChecksumSize {
			return 0, envErr("last block of %d bytes is too short to hold data and a checksum", n)
		}
		if _, err := io.ReadFull(br.r, br.buf[:n]); err != nil {
			if isShort(err) {
				return 0, envErr("block %d ends early", br.blocks)
			}
			if br.ioErr == nil {
				br.ioErr = fmt.Errorf("keel/gbsnap: read block %d: %w", br.blocks, err)
			}
			return 0, br.ioErr
		}
		br.left -= n
		data, crc := br.buf[:n-envChecksumSize], br.buf[n-envChecksumSize:n]
		if got := crc32.ChecksumIEEE(data); binary.BigEndian.Uint32(crc) != got {
			return 0, envErr("block %d (payload offset %d) checksum %x, computed %08x",
				br.blocks, int64(br.blocks)*envBlockSize, crc, got)
		}
		br.sum.Write(crc)
		br.blocks++
		br.cur = data
	}
	n := copy(p, br.cur)
	br.cur = br.cur[n:]
	return n, nil
}

// EnvelopeReader reads a .gbsnap: OpenEnvelope checks the header and the
// tail, ReadSessions skips Dragonboat's session table, Payload yields what
// the state machine wrote, and Finish checks the rest once the payload was
// read to its end.
type EnvelopeReader struct {
	header pb.SnapshotHeader
	blocks *blockReader
	// payload is the decompressed payload.
	payload io.Reader
	size    int64
}

// OpenEnvelope checks the header and tail of the .gbsnap in r (size bytes)
// and returns a reader of its payload.
func OpenEnvelope(r io.ReaderAt, size int64) (*EnvelopeReader, error) {
	if size < envHeaderSize+envTailSize {
		return nil, envErr("%d bytes, too short for a header and a tail", size)
	}
	hb := make([]byte, envHeaderSize)
	if _, err := r.ReadAt(hb, 0); err != nil {
		if isShort(err) {
			return nil, envErr("header ends early")
		}
		return nil, fmt.Errorf("keel/gbsnap: read header: %w", err)
	}
	sh, err := parseEnvHeader(hb)
	if err != nil {
		return nil, err
	}
	tail := make([]byte, envTailSize)
	if _, err := r.ReadAt(tail, size-envTailSize); err != nil {
		if isShort(err) {
			return nil, envErr("tail ends early")
		}
		return nil, fmt.Errorf("keel/gbsnap: read tail: %w", err)
	}
	if !bytes.Equal(tail[8:], envMagic) {
		return nil, envErr("bad tail magic %x (truncated file?)", tail[8:])
	}
	blockBytes := size - envHeaderSize - envTailSize
	if got := binary.LittleEndian.Uint64(tail[:8]); got != uint64(blockBytes) {
		return nil, envErr("tail says %d bytes of blocks, the file holds %d", got, blockBytes)
	}
	er := &EnvelopeReader{header: sh, size: size}
	er.blocks = newBlockReader(io.NewSectionReader(r, envHeaderSize, blockBytes), blockBytes)
	er.payload = er.blocks
	if sh.CompressionType == pb.Snappy {
		er.payload = snappy.NewReader(er.blocks)
	}
	return er, nil
}

// Header returns the checked envelope header.
func (er *EnvelopeReader) Header() pb.SnapshotHeader { return er.header }

// Payload returns the decompressed payload; call ReadSessions first.
func (er *EnvelopeReader) Payload() io.Reader { return er.payload }

// ReadSessions reads and skips Dragonboat's session table at the start of
// the payload, returning the session count.
func (er *EnvelopeReader) ReadSessions() (uint64, error) {
	return readSessions(er.payload, er.payloadErr)
}

// readSessions reads and skips a session table from payload; perr words a
// failure to read it.
func readSessions(payload io.Reader, perr func(what string, err error) error) (uint64, error) {
	var b [16]byte
	if _, err := io.ReadFull(payload, b[:]); err != nil {
		return 0, perr("session table", err)
	}
	count := binary.LittleEndian.Uint64(b[8:])
	if count > maxSessions {
		return 0, envErr("session table claims %d sessions", count)
	}
	for i := uint64(0); i < count; i++ {
		if _, err := io.ReadFull(payload, b[:8]); err != nil {
			return 0, perr(fmt.Sprintf("session %d", i), err)
		}
		n := binary.LittleEndian.Uint64(b[:8])
		if n > maxSessionRecord {
			return 0, envErr("session %d of %d bytes", i, n)
		}
		if _, err := io.CopyN(io.Discard, payload, int64(n)); err != nil {
			return 0, perr(fmt.Sprintf("session %d", i), err)
		}
	}
	return count, nil
}

// payloadErr classifies a failure reading the payload: a filesystem error
// as itself, anything else (a short payload, Snappy framing, a block
// checksum) as damage.
func (er *EnvelopeReader) payloadErr(what string, err error) error {
	switch {
	case er.blocks.ioErr != nil:
		return er.blocks.ioErr
	case errors.Is(err, ErrDamaged):
		return err
	case isShort(err):
		return envErr("payload ends inside the %s", what)
	default:
		return envErr("%s: %v", what, err)
	}
}

// Finish checks that the payload ends where the state machine's data ended
// and that every block was read, and returns what the envelope holds (with
// Sessions left zero).
func (er *EnvelopeReader) Finish() (Envelope, error) {
	var one [1]byte
	if n, err := io.ReadFull(er.payload, one[:]); n > 0 || (err != nil && !errors.Is(err, io.EOF)) {
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return Envelope{}, er.payloadErr("end of the payload", err)
		}
		return Envelope{}, envErr("trailing bytes after the state machine's data")
	}
	// Snappy's reader may stop before the block reader's EOF: drain it so
	// every block checksum is checked.
	if n, err := io.Copy(io.Discard, er.blocks); err != nil || n > 0 {
		if err != nil {
			return Envelope{}, er.payloadErr("end of the payload", err)
		}
		return Envelope{}, envErr("%d bytes after the compressed payload", n)
	}
	sum := er.blocks.sum.Sum(nil)
	if !bytes.Equal(sum, er.header.PayloadChecksum) {
		return Envelope{}, envErr("payload checksum %x, computed %x", er.header.PayloadChecksum, sum)
	}
	comp := "none"
	if er.header.CompressionType == pb.Snappy {
		comp = "snappy"
	}
	return Envelope{
		Version:         er.header.Version,
		Compression:     comp,
		FileSize:        uint64(er.size),
		Blocks:          er.blocks.blocks,
		PayloadChecksum: fmt.Sprintf("%x", sum),
		Checksum:        sum,
	}, nil
}

// blockWriter is the writing side of blockReader.
type blockWriter struct {
	w     io.Writer
	buf   []byte
	total uint64
	sum   interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func newBlockWriter(w io.Writer) *blockWriter {
	return &blockWriter{w: w, buf: make([]byte, 0, envBlockSize+envChecksumSize), sum: crc32.NewIEEE()}
}

func (bw *blockWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(envBlockSize-len(bw.buf), len(p))
		bw.buf = append(bw.buf, p[:n]...)
		p, written = p[n:], written+n
		if len(bw.buf) == envBlockSize {
			if err := bw.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (bw *blockWriter) flush() error {
	crc := binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(bw.buf))
	bw.sum.Write(crc)
	bw.buf = append(bw.buf, crc...)
	if _, err := bw.w.Write(bw.buf); err != nil {
		return err
	}
	bw.total += uint64(len(bw.buf))
	bw.buf = bw.buf[:0]
	return nil
}

// Close writes the last block and the tail.
func (bw *blockWriter) Close() error {
	if len(bw.buf) > 0 {
		if err := bw.flush(); err != nil {
			return err
		}
	}
	tail := binary.LittleEndian.AppendUint64(nil, bw.total)
	_, err := bw.w.Write(append(tail, envMagic...))
	return err
}

// WriteEnvelope writes a new .gbsnap at path holding an empty session table
// and then what payload writes, as Dragonboat's exporter does, and returns
// the file's size and payload checksum (pb.Snapshot.FileSize and Checksum).
// The file is fsynced; path must not exist.
func WriteEnvelope(path string, ct pb.CompressionType, payload func(io.Writer) error) (size uint64, checksum []byte, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if _, err := f.Write(make([]byte, envHeaderSize)); err != nil {
		return 0, nil, err
	}
	bw := newBlockWriter(f)
	var w io.Writer = bw
	var sw *snappy.Writer
	if ct == pb.Snappy {
		sw = snappy.NewBufferedWriter(bw)
		w = sw
	}
	sessions := binary.LittleEndian.AppendUint64(nil, lruMaxSessionCount)
	sessions = binary.LittleEndian.AppendUint64(sessions, 0)
	if _, err := w.Write(sessions); err != nil {
		return 0, nil, err
	}
	if err := payload(w); err != nil {
		return 0, nil, err
	}
	if sw != nil {
		if err := sw.Close(); err != nil {
			return 0, nil, err
		}
	}
	if err := bw.Close(); err != nil {
		return 0, nil, err
	}
	checksum = bw.sum.Sum(nil)
	sh := pb.SnapshotHeader{PayloadChecksum: checksum, ChecksumType: pb.CRC32IEEE, Version: EnvelopeVersion, CompressionType: ct}
	raw, err := sh.Marshal()
	if err != nil {
		return 0, nil, err
	}
	sh.HeaderChecksum = binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(raw))
	if raw, err = sh.Marshal(); err != nil {
		return 0, nil, err
	}
	hb := binary.LittleEndian.AppendUint64(nil, uint64(len(raw)))
	if _, err := f.WriteAt(append(hb, raw...), 0); err != nil {
		return 0, nil, err
	}
	if err := f.Sync(); err != nil {
		return 0, nil, err
	}
	return envHeaderSize + bw.total + envTailSize, checksum, nil
}
