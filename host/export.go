package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keel-db/keel/internal/gbsnap"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/tools"
)

// Export writes an exported snapshot of shardID, taken on nh's replica, into
// dir (created if missing) and returns its index and the directory holding
// it (<dir>/snapshot-<index as %016X>, one .gbsnap file and
// snapshot.metadata). The image inside is exact at index: every write
// acknowledged before the call is in it, nothing after it.
//
// Export is Dragonboat's SyncRequestSnapshot with Exported set; it does not
// compact the Raft log. ctx needs a deadline long enough to write the whole
// state (Prepare takes microseconds; Save copies the data).
//
// Keep the export directory whole: Import needs the .gbsnap together with
// its metadata.
func Export(ctx context.Context, nh *dragonboat.NodeHost, shardID uint64, dir string) (index uint64, path string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, "", fmt.Errorf("keel: export to %s: %w", dir, err)
	}
	index, err = nh.SyncRequestSnapshot(ctx, shardID, dragonboat.SnapshotOption{Exported: true, ExportPath: dir})
	if err != nil {
		return 0, "", fmt.Errorf("keel: export shard %d: %w", shardID, err)
	}
	return index, filepath.Join(dir, fmt.Sprintf("snapshot-%016X", index)), nil
}

// Import rewrites the history of replicaID of the exported snapshot's shard
// so that it restarts from the snapshot in srcDir (a path Export returned)
// with members as the shard's membership (replica ID -> Raft address). It
// is for disaster recovery after a shard lost its quorum for good.
//
// Protocol (Dragonboat's tools.ImportSnapshot, which this wraps):
//  1. Stop the NodeHost of every member (nhConfig is the config that
//     NodeHost runs with; its RaftAddress must be members[replicaID]).
//  2. Call Import on every member's host with the same srcDir contents and
//     the same members. Replicas missing from members are marked removed;
//     never restart them.
//  3. Restart the NodeHosts and start the replicas as after a reboot, with
//     empty initial members (StartOnDiskReplica(nil, false, ...)): the
//     import records the membership, and Dragonboat refuses a members map
//     for an imported replica.
//
// On restart Dragonboat calls RecoverFromSnapshot even when the replica's
// own state is newer; Keel installs the exported image (exact at its index)
// and the shard continues from there. Every write after the export is lost.
//
// Before anything is written, Import verifies srcDir end to end, reading
// every byte once: exactly one .gbsnap and a snapshot.metadata, the
// metadata decodes and describes the .gbsnap, the envelope's header, block
// and payload checksums hold, and the Keel stream inside is complete and
// exact. tools.ImportSnapshot panics on a damaged header or metadata;
// verifying first turns that into an error wrapping ErrBadSnapshot and
// leaves the NodeHost directory untouched. An error reading srcDir is
// returned as itself. Verification reads the files with the OS filesystem,
// so nhConfig.Expert.FS, if set, must see the same srcDir.
func Import(nhConfig config.NodeHostConfig, srcDir string, members map[uint64]string, replicaID uint64) error {
	if _, err := gbsnap.VerifyExport(srcDir, nil); err != nil {
		if errors.Is(err, gbsnap.ErrDamaged) {
			return fmt.Errorf("%w: import %s as replica %d: %w", ErrBadSnapshot, srcDir, replicaID, err)
		}
		return fmt.Errorf("keel: import %s as replica %d: verify: %w", srcDir, replicaID, err)
	}
	if err := tools.ImportSnapshot(nhConfig, srcDir, members, replicaID); err != nil {
		return fmt.Errorf("keel: import %s as replica %d: %w", srcDir, replicaID, err)
	}
	return nil
}
