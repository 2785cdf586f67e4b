// Package gbsnap reads, verifies and writes the files of a Dragonboat
// exported snapshot as Keel produces them: the .gbsnap snapshot file (an
// envelope around the state machine's payload) and snapshot.metadata. It is
// the one copy of this format shared by host.Import, which verifies an
// export before handing it to Dragonboat's tools.ImportSnapshot (which
// panics on a damaged header or metadata), and keelctl's verify, import and
// export. Dragonboat keeps its own code for these files in internal
// packages (internal/rsm/snapshotio.go, rwv.go, internal/fileutil), so Keel
// reads and writes them itself; the layout below was read from the pinned
// Dragonboat version.
//
// # The .gbsnap envelope (version 2)
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
// for Keel, one snapshot stream (package snapshot).
//
// # snapshot.metadata
//
// Dragonboat's flag file (internal/fileutil CreateFlagFile): the last 8
// bytes of the MD5 of the data, then a marshalled pb.Snapshot.
//
// # An export directory
//
// snapshot-<index as %016X>/ holding exactly one .gbsnap and
// snapshot.metadata, which must agree: the metadata's file name, size,
// checksum, shard and index describe that .gbsnap and the Keel stream in it.
// VerifyExport checks all of it, reading every byte once.
//
// # Errors
//
// Every way the bytes can be wrong wraps ErrDamaged (a stream problem also
// wraps package snapshot's sentinel). An error from the filesystem (a
// missing or unreadable file, EIO) is returned wrapped as itself and never
// as ErrDamaged, so a caller can tell a bad export from a failing disk.
// Nothing here panics on any input; memory is bounded by one 2 MiB block,
// Snappy's buffers and the stream's file names.
//
// # A stream to a follower
//
// The chunks Dragonboat streams to a follower carry the same envelope
// (the receiver stages their data as one file), with a header written
// before the payload is known: the marshalled pb.SnapshotHeader has no
// HeaderChecksum and a PayloadChecksum of four zero bytes, and the
// header's CRC-32 IEEE (big-endian) follows the marshalled bytes, in what
// an export leaves as padding. The session table is empty. ReceivedPayload
// (received.go) reads it as it arrives, size unknown, holding back one
// block and a tail to tell the end; host's transport stages received
// images with it (package snapshot, "Receiving while the stream arrives").
//
// # Concurrency
//
// The functions keep no state. An EnvelopeReader is used by one goroutine.
// Verification reads the files once; a file changed after it was verified
// is not noticed.
package gbsnap
