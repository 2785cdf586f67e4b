// Package engine is Keel's Pebble wrapper. It owns everything Keel keeps on
// disk for one replica's state machine: the Pebble database, the key
// namespaces inside it, the applied-index record, checkpoints, and the image
// directory layout that lets a new image be swapped in atomically.
//
// # Key namespaces
//
// Every Pebble key starts with a one-byte namespace tag:
//
//	0x00 'm' <name>   Keel metadata (applied index, identity, format)
//	0x01 <user key>   user data
//
// A user key k is stored as 0x01||k, so no user key, whatever its bytes, can
// reach the metadata namespace. Iteration over user data is bounded to
// [0x01, 0x02). Metadata keys:
//
//	meta/applied   8 bytes, big-endian Raft index of the last applied entry
//	meta/identity  16 bytes, big-endian shard ID then replica ID
//	meta/format    1 byte, Keel's data format version (currently 1)
//
// # Image directory layout
//
// A replica's root directory holds one or more image directories and a
// pointer file naming the live one:
//
//	<root>/CURRENT          "img-000000000000000N\n", replaced atomically
//	<root>/img-<16 digits>/ a complete Pebble database
//	<root>/tmp-*            work in progress (checkpoints, incoming images)
//
// CURRENT is only ever replaced by writing a temp file, fsyncing it, renaming
// it over CURRENT and fsyncing the root. The root itself is created with the
// parent of every new directory fsynced, and its parent is fsynced again on
// each open, so a crash cannot drop the whole root. On Open, every img-*
// that CURRENT does not name and every tmp-* is removed: they are leftovers
// of a crash in the middle of an install or a checkpoint.
//
// # Durability
//
// Batches are committed without fsync (the Raft log is the durable record of
// everything after the last Sync). Sync writes an empty synced record to
// Pebble's WAL, which fsyncs every batch committed before it; after Sync
// returns, a crash cannot lose applied state up to the applied index read
// before the call. Pebble's WAL replays a prefix of committed batches after
// a crash, and the applied index is written in the same batch as the data, so
// the recovered applied index always matches the recovered data.
//
// # Pebble options
//
// See options.go: each setting there says why it was chosen.
//
// # Concurrency
//
// An Engine is safe for concurrent use: Pebble serialises writers and reads
// come from immutable views. A Batch belongs to one goroutine. A View is a
// Pebble snapshot: reads through it see one consistent state, including the
// applied index recorded with that state, until it is closed.
package engine
