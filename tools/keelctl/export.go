package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/gbsnap"
	"github.com/keel-db/keel/snapshot"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/spf13/cobra"
)

// exportReport is `keelctl export`'s output.
type exportReport struct {
	Path      string            `json:"path"`
	ShardID   uint64            `json:"shard_id"`
	ReplicaID uint64            `json:"replica_id"`
	Index     uint64            `json:"index"`
	Term      uint64            `json:"term"`
	Members   map[uint64]string `json:"members"`
	Files     uint32            `json:"files"`
	Bytes     uint64            `json:"bytes"`
	FileSize  uint64            `json:"file_size"`
}

func newExportCmd(g *globals) *cobra.Command {
	var members string
	var term uint64
	var compression string
	cmd := &cobra.Command{
		Use:   "export DIR OUT",
		Short: "Write an importable exported snapshot of a stopped replica into OUT",
		Long: `export writes OUT/snapshot-<index>/ (one .gbsnap and snapshot.metadata, the
layout host.Export produces, accepted by keelctl import and Dragonboat's
tools.ImportSnapshot) holding the replica's state exactly at its applied index.
The replica must be stopped; nothing in DIR is written. The term and the
membership at that index are read from the Raft log; --members and --term
override them (needed when the log no longer reaches back far enough). The
result is verified before it is published under its final name.`,
		Args: args("DIR", "OUT"),
		RunE: func(cmd *cobra.Command, a []string) error {
			var ct pb.CompressionType
			switch compression {
			case "snappy":
				ct = pb.Snappy
			case "none":
				ct = pb.NoCompression
			default:
				return fmt.Errorf("%w: --compression must be none or snappy", errUsage)
			}
			var override map[uint64]string
			if members != "" {
				var err error
				if override, err = parseMembers(members); err != nil {
					return err
				}
			}
			t, err := g.resolve(a[0])
			if err != nil {
				return err
			}
			rep, err := export(g, t, a[1], ct, override, term)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(rep)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "exported\t%s\n", rep.Path)
			fmt.Fprintf(w, "shard\t%d\nreplica\t%d\nindex\t%d\nterm\t%d\n", rep.ShardID, rep.ReplicaID, rep.Index, rep.Term)
			fmt.Fprintf(w, "members\t%s\n", host.FormatMembers(rep.Members))
			fmt.Fprintf(w, "files\t%d (%d bytes)\n", rep.Files, rep.Bytes)
			fmt.Fprintf(w, "snapshot file\t%d bytes\n", rep.FileSize)
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&members, "members", "", `membership to record, "1=host:port,2=host:port" (default: from the Raft log)`)
	f.Uint64Var(&term, "term", 0, "Raft term of the entry at the applied index (default: from the Raft log)")
	f.StringVar(&compression, "compression", "none", "snapshot compression: none (as host.ShardConfig) or snappy")
	return cmd
}

func export(g *globals, t target, out string, ct pb.CompressionType, members map[uint64]string, term uint64) (rep exportReport, err error) {
	// The read-only open holds Pebble's lock for the whole export, so no
	// process can start on the replica while its files are streamed.
	e, err := t.openEngine()
	if err != nil {
		return rep, err
	}
	defer e.Close()
	index, err := e.AppliedIndex()
	if err != nil {
		return rep, fmt.Errorf("%w: applied index: %w", errOpen, err)
	}
	if index == 0 {
		return rep, fmt.Errorf("%w: replica has applied nothing; there is nothing to export", errProblems)
	}
	if id, ok, err := e.Identity(); err != nil || (ok && (id.ShardID != t.shardID || id.ReplicaID != t.replicaID)) {
		return rep, fmt.Errorf("%w: the image's identity (%v, %v) does not match shard %d replica %d; run keelctl check", errProblems, id, err, t.shardID, t.replicaID)
	}
	meta := logMeta{Term: term, Membership: pb.Membership{ConfigChangeId: index, Addresses: members}}
	if members == nil || term == 0 {
		lm, err := readLogMeta(t.nodeHostDir, t.shardID, t.replicaID, index)
		if err != nil {
			if errors.Is(err, errLive) {
				return rep, err
			}
			return rep, fmt.Errorf("%w: cannot read the term and membership at index %d from the Raft log (pass --term and --members): %w",
				errProblems, index, err)
		}
		if members == nil {
			meta.Membership = lm.Membership
		}
		if term == 0 {
			meta.Term = lm.Term
		}
	}
	if len(meta.Membership.Addresses) == 0 || meta.Term == 0 {
		return rep, fmt.Errorf("%w: no members or term at index %d in the Raft log (pass --term and --members)", errProblems, index)
	}

	if err := os.MkdirAll(out, 0o755); err != nil {
		return rep, fmt.Errorf("%w: %w", errOpen, err)
	}
	name := fmt.Sprintf("snapshot-%016X", index)
	final, err := filepath.Abs(filepath.Join(out, name))
	if err != nil {
		return rep, err
	}
	if _, err := os.Stat(final); err == nil {
		return rep, fmt.Errorf("%w: %s already exists", errUsage, final)
	}
	// Build under a temporary name and rename once verified, so OUT never
	// holds a half-written snapshot-* directory.
	tmp, err := os.MkdirTemp(out, ".keelctl-export-")
	if err != nil {
		return rep, fmt.Errorf("%w: %w", errOpen, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	files, err := snapshot.ListImage(vfs.Default, e.Dir())
	if err != nil {
		return rep, fmt.Errorf("%w: %w", errOpen, err)
	}
	h := snapshot.Header{ShardID: t.shardID, ReplicaID: t.replicaID, SnapshotIndex: index, ImageAppliedIndex: index}
	for _, f := range files {
		h.TotalBytes += f.Size
	}
	bar := g.progress(int64(h.TotalBytes), "exporting")
	gbPath := filepath.Join(tmp, name+gbsnap.SnapshotSuffix)
	size, sum, err := gbsnap.WriteEnvelope(gbPath, ct, func(w io.Writer) error {
		return snapshot.WriteStream(&countWriter{w: w, add: func(n int) { _ = bar.Add(n) }}, h, vfs.Default, e.Dir(), files, nil)
	})
	_ = bar.Close()
	if err != nil {
		return rep, fmt.Errorf("write %s: %w", gbPath, err)
	}
	ss := pb.Snapshot{
		Filepath:    filepath.Join(final, name+gbsnap.SnapshotSuffix),
		FileSize:    size,
		Index:       index,
		Term:        meta.Term,
		Membership:  meta.Membership,
		Checksum:    sum,
		ShardID:     t.shardID,
		Type:        pb.OnDiskStateMachine,
		OnDiskIndex: index,
	}
	if err := gbsnap.WriteMetadata(filepath.Join(tmp, gbsnap.MetadataFilename), &ss); err != nil {
		return rep, fmt.Errorf("write metadata: %w", err)
	}
	if err := syncDir(tmp); err != nil {
		return rep, err
	}
	quiet := *g
	quiet.stderr = io.Discard
	if _, err := verifyPath(&quiet, tmp); err != nil {
		return rep, fmt.Errorf("the export does not verify (nothing published): %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return rep, err
	}
	if err := syncDir(out); err != nil {
		return rep, err
	}
	return exportReport{
		Path: final, ShardID: t.shardID, ReplicaID: t.replicaID, Index: index, Term: meta.Term,
		Members: meta.Membership.Addresses, Files: uint32(len(files)), Bytes: h.TotalBytes, FileSize: size,
	}, nil
}

type countWriter struct {
	w   io.Writer
	add func(int)
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.add(n)
	return n, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}
