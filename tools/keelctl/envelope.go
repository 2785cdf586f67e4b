package main

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/golang/snappy"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Dragonboat's snapshot file envelope (.gbsnap), version 2, at the pinned
// version. keelctl reads and writes it itself because the code lives in
// Dragonboat's internal packages (internal/rsm/snapshotio.go, rwv.go,
// internal/utils/dio, internal/settings/hard.go):
//
//	header, 1024 bytes (settings.SnapshotHeaderSize):
//	  length L, 8 bytes little-endian; L bytes of a marshalled
//	  pb.SnapshotHeader whose HeaderChecksum is CRC-32 (IEEE, big-endian
//	  bytes) of the same header marshalled without it; zero padding.
//	blocks: the (possibly compressed) payload cut into 2 MiB blocks
//	  (settings.SnapshotChunkSize), each followed by its CRC-32 IEEE; the
//	  last block may be shorter.
//	tail, 16 bytes: the blocks' total size with checksums, 8 bytes
//	  little-endian, then the magic 3F 5B CB F1 FA BA 81 9F.
//
// The header's PayloadChecksum (and the metadata's Checksum) is CRC-32 IEEE
// over the concatenated block checksums. With SnapshotCompressionType Snappy
// the payload is github.com/golang/snappy's framing format (NewBufferedWriter
// / NewReader), with its own per-chunk CRC-32C. Inside the payload an
// on-disk state machine's export starts with Dragonboat's client-session
// table (rsm/lrusession.go: capacity 8 bytes LE, count 8 bytes LE, then count
// times a length 8 bytes LE and JSON) followed by what SaveSnapshot wrote:
// for Keel, one snapshot stream.
//
// snapshot.metadata is Dragonboat's flag file (internal/fileutil
// CreateFlagFile): the last 8 bytes of the MD5 of the data, then a
// marshalled pb.Snapshot.
const (
	envHeaderSize   = 1024
	envBlockSize    = 2 << 20
	envChecksumSize = 4
	envTailSize     = 16
	envVersion      = 2
	// lruMaxSessionCount is settings.Hard.LRUMaxSessionCount's default,
	// the capacity Dragonboat writes into an empty session table.
	lruMaxSessionCount = 4096
	// Bounds on the session table of an untrusted file: Keel uses no-op
	// sessions, so any table at all is small.
	maxSessions      = 1 << 16
	maxSessionRecord = 1 << 20
	metadataFilename = "snapshot.metadata"
	snapshotSuffix   = ".gbsnap"
)

var envMagic = []byte{0x3F, 0x5B, 0xCB, 0xF1, 0xFA, 0xBA, 0x81, 0x9F}

// errEnvelope marks a damaged or foreign .gbsnap file.
var errEnvelope = errors.New("bad Dragonboat snapshot file")

// envelopeInfo is what the envelope says about itself.
type envelopeInfo struct {
	Version         uint64 `json:"version"`
	Compression     string `json:"compression"`
	FileSize        uint64 `json:"file_size"`
	Blocks          int    `json:"blocks"`
	PayloadChecksum string `json:"payload_checksum"`
	Sessions        uint64 `json:"sessions"`
	checksum        []byte
}

// parseEnvHeader checks and decodes the 1024-byte header.
func parseEnvHeader(b []byte) (pb.SnapshotHeader, error) {
	var sh pb.SnapshotHeader
	if len(b) < envHeaderSize {
		return sh, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", errEnvelope, len(b), envHeaderSize)
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n == 0 || n > envHeaderSize-8-4 {
		return sh, fmt.Errorf("%w: header length %d out of range (not a .gbsnap file?)", errEnvelope, n)
	}
	data := b[8 : 8+n]
	if err := sh.Unmarshal(data); err != nil {
		return sh, fmt.Errorf("%w: header does not decode: %v", errEnvelope, err)
	}
	want := sh.HeaderChecksum
	sh.HeaderChecksum = nil
	raw, err := sh.Marshal()
	if err != nil {
		return sh, fmt.Errorf("%w: header does not re-encode: %v", errEnvelope, err)
	}
	sum := crc32.NewIEEE()
	sum.Write(raw)
	if got := sum.Sum(nil); !bytes.Equal(got, want) {
		return sh, fmt.Errorf("%w: header checksum %x, computed %x", errEnvelope, want, got)
	}
	sh.HeaderChecksum = want
	// Dragonboat's reader treats 4 bytes after the header as an optional
	// CRC (zero when absent) and the rest as padding.
	for _, c := range b[8+n:] {
		if c != 0 {
			return sh, fmt.Errorf("%w: non-zero bytes in the header padding", errEnvelope)
		}
	}
	if sh.Version != envVersion {
		return sh, fmt.Errorf("%w: envelope version %d, keelctl reads version %d", errEnvelope, sh.Version, envVersion)
	}
	if sh.ChecksumType != pb.CRC32IEEE {
		return sh, fmt.Errorf("%w: unknown checksum type %d", errEnvelope, sh.ChecksumType)
	}
	if sh.CompressionType != pb.NoCompression && sh.CompressionType != pb.Snappy {
		return sh, fmt.Errorf("%w: unknown compression type %d", errEnvelope, sh.CompressionType)
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
	sum  io.Writer
	hash interface{ Sum([]byte) []byte }
}

func newBlockReader(r io.Reader, blockBytes int64) *blockReader {
	h := crc32.NewIEEE()
	return &blockReader{r: r, left: blockBytes, buf: make([]byte, envBlockSize+envChecksumSize), sum: h, hash: h}
}

func (br *blockReader) Read(p []byte) (int, error) {
	for len(br.cur) == 0 {
		if br.left == 0 {
			return 0, io.EOF
		}
		n := int64(len(br.buf))
		if br.left < n {
			n = br.left
		}
		if n <= envChecksumSize {
			return 0, fmt.Errorf("%w: last block of %d bytes is too short to hold data and a checksum", errEnvelope, n)
		}
		if _, err := io.ReadFull(br.r, br.buf[:n]); err != nil {
			return 0, fmt.Errorf("%w: read block %d: %v", errEnvelope, br.blocks, err)
		}
		br.left -= n
		data, crc := br.buf[:n-envChecksumSize], br.buf[n-envChecksumSize:n]
		if got := crc32.ChecksumIEEE(data); binary.BigEndian.Uint32(crc) != got {
			return 0, fmt.Errorf("%w: block %d (payload offset %d) checksum %x, computed %08x",
				errEnvelope, br.blocks, int64(br.blocks)*envBlockSize, crc, got)
		}
		br.sum.Write(crc)
		br.blocks++
		br.cur = data
	}
	n := copy(p, br.cur)
	br.cur = br.cur[n:]
	return n, nil
}

// envelopeReader opens f (a .gbsnap of size bytes) and returns the header
// and a reader of the decompressed payload. Call finish after the payload
// was read to its end.
type envelopeReader struct {
	header pb.SnapshotHeader
	blocks *blockReader
	// payload is the decompressed payload.
	payload io.Reader
	size    int64
}

func openEnvelope(f io.ReaderAt, size int64) (*envelopeReader, error) {
	if size < envHeaderSize+envTailSize {
		return nil, fmt.Errorf("%w: %d bytes, too short for a header and a tail", errEnvelope, size)
	}
	hb := make([]byte, envHeaderSize)
	if _, err := f.ReadAt(hb, 0); err != nil {
		return nil, fmt.Errorf("%w: read header: %v", errEnvelope, err)
	}
	sh, err := parseEnvHeader(hb)
	if err != nil {
		return nil, err
	}
	tail := make([]byte, envTailSize)
	if _, err := f.ReadAt(tail, size-envTailSize); err != nil {
		return nil, fmt.Errorf("%w: read tail: %v", errEnvelope, err)
	}
	if !bytes.Equal(tail[8:], envMagic) {
		return nil, fmt.Errorf("%w: bad tail magic %x (truncated file?)", errEnvelope, tail[8:])
	}
	blockBytes := size - envHeaderSize - envTailSize
	if got := binary.LittleEndian.Uint64(tail[:8]); got != uint64(blockBytes) {
		return nil, fmt.Errorf("%w: tail says %d bytes of blocks, the file holds %d", errEnvelope, got, blockBytes)
	}
	er := &envelopeReader{header: sh, size: size}
	er.blocks = newBlockReader(io.NewSectionReader(f, envHeaderSize, blockBytes), blockBytes)
	er.payload = er.blocks
	if sh.CompressionType == pb.Snappy {
		er.payload = snappy.NewReader(er.blocks)
	}
	return er, nil
}

// readSessions reads and skips Dragonboat's session table at the start of
// the payload, returning the session count.
func (er *envelopeReader) readSessions() (uint64, error) {
	var b [16]byte
	if _, err := io.ReadFull(er.payload, b[:]); err != nil {
		return 0, fmt.Errorf("%w: session table: %v", errEnvelope, envReadErr(err))
	}
	count := binary.LittleEndian.Uint64(b[8:])
	if count > maxSessions {
		return 0, fmt.Errorf("%w: session table claims %d sessions", errEnvelope, count)
	}
	for i := uint64(0); i < count; i++ {
		if _, err := io.ReadFull(er.payload, b[:8]); err != nil {
			return 0, fmt.Errorf("%w: session %d: %v", errEnvelope, i, envReadErr(err))
		}
		n := binary.LittleEndian.Uint64(b[:8])
		if n > maxSessionRecord {
			return 0, fmt.Errorf("%w: session %d of %d bytes", errEnvelope, i, n)
		}
		if _, err := io.CopyN(io.Discard, er.payload, int64(n)); err != nil {
			return 0, fmt.Errorf("%w: session %d: %v", errEnvelope, i, envReadErr(err))
		}
	}
	return count, nil
}

// finish checks that the payload ends where the state machine's data ended
// and that every block was read, and returns what the envelope holds.
func (er *envelopeReader) finish() (envelopeInfo, error) {
	var one [1]byte
	if n, err := io.ReadFull(er.payload, one[:]); n > 0 || (err != nil && !errors.Is(err, io.EOF)) {
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return envelopeInfo{}, fmt.Errorf("%w: after the state machine's data: %v", errEnvelope, err)
		}
		return envelopeInfo{}, fmt.Errorf("%w: trailing bytes after the state machine's data", errEnvelope)
	}
	// Snappy's reader may stop before the block reader's EOF: drain it so
	// every block checksum is checked.
	if n, err := io.Copy(io.Discard, er.blocks); err != nil || n > 0 {
		if err != nil {
			return envelopeInfo{}, err
		}
		return envelopeInfo{}, fmt.Errorf("%w: %d bytes after the compressed payload", errEnvelope, n)
	}
	sum := er.blocks.hash.Sum(nil)
	if !bytes.Equal(sum, er.header.PayloadChecksum) {
		return envelopeInfo{}, fmt.Errorf("%w: payload checksum %x, computed %x", errEnvelope, er.header.PayloadChecksum, sum)
	}
	comp := "none"
	if er.header.CompressionType == pb.Snappy {
		comp = "snappy"
	}
	return envelopeInfo{
		Version:         er.header.Version,
		Compression:     comp,
		FileSize:        uint64(er.size),
		Blocks:          er.blocks.blocks,
		PayloadChecksum: fmt.Sprintf("%x", sum),
		checksum:        sum,
	}, nil
}

func envReadErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("payload ends early")
	}
	return err
}

// blockWriter is the writing side of blockReader.
type blockWriter struct {
	w     io.Writer
	buf   []byte
	total uint64
	sums  io.Writer
	hash  interface{ Sum([]byte) []byte }
}

func newBlockWriter(w io.Writer) *blockWriter {
	h := crc32.NewIEEE()
	return &blockWriter{w: w, buf: make([]byte, 0, envBlockSize+envChecksumSize), sums: h, hash: h}
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
	bw.sums.Write(crc)
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

// writeEnvelope writes a .gbsnap at path holding an empty session table and
// then what payload writes, as Dragonboat's exporter does, and returns the
// file's size and payload checksum (pb.Snapshot.FileSize and Checksum). The
// file is fsynced.
func writeEnvelope(path string, ct pb.CompressionType, payload func(io.Writer) error) (size uint64, checksum []byte, err error) {
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
	checksum = bw.hash.Sum(nil)
	sh := pb.SnapshotHeader{PayloadChecksum: checksum, ChecksumType: pb.CRC32IEEE, Version: envVersion, CompressionType: ct}
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

// flagFileHash is Dragonboat's flag-file checksum: the last 8 bytes of MD5.
func flagFileHash(data []byte) []byte {
	s := md5.Sum(data)
	return s[8:]
}

// readMetadata reads and checks a snapshot.metadata file.
func readMetadata(path string) (pb.Snapshot, error) {
	var ss pb.Snapshot
	st, err := os.Stat(path)
	if err != nil {
		return ss, err
	}
	if st.Size() > 1<<20 {
		return ss, fmt.Errorf("%w: %s is %d bytes, too large for snapshot metadata", errEnvelope, path, st.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return ss, err
	}
	if len(data) < 8 {
		return ss, fmt.Errorf("%w: %s is %d bytes, too short", errEnvelope, metadataFilename, len(data))
	}
	if !bytes.Equal(data[:8], flagFileHash(data[8:])) {
		return ss, fmt.Errorf("%w: %s checksum mismatch", errEnvelope, metadataFilename)
	}
	if err := ss.Unmarshal(data[8:]); err != nil {
		return ss, fmt.Errorf("%w: %s does not decode: %v", errEnvelope, metadataFilename, err)
	}
	return ss, nil
}

// writeMetadata writes ss as a flag file at path and fsyncs it.
func writeMetadata(path string, ss *pb.Snapshot) error {
	data, err := ss.Marshal()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(flagFileHash(data), data...)); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
