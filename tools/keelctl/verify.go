package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/gbsnap"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/spf13/cobra"
)

// verifyReport is `keelctl verify`'s output.
type verifyReport struct {
	Path     string           `json:"path"`
	Kind     string           `json:"kind"` // "export", "gbsnap" or "stream"
	Gbsnap   string           `json:"gbsnap,omitempty"`
	Envelope *gbsnap.Envelope `json:"envelope,omitempty"`
	Metadata *metadataInfo    `json:"metadata,omitempty"`
	Stream   gbsnap.Stream    `json:"stream"`
	OK       bool             `json:"ok"`
}

type metadataInfo struct {
	Index    uint64            `json:"index"`
	Term     uint64            `json:"term"`
	ShardID  uint64            `json:"shard_id"`
	FileSize uint64            `json:"file_size"`
	Members  map[uint64]string `json:"members"`
	Removed  []uint64          `json:"removed,omitempty"`
	Imported bool              `json:"imported,omitempty"`
	raw      pb.Snapshot
}

func newVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify PATH",
		Short: "Check an exported snapshot, a .gbsnap file or a raw Keel snapshot stream end to end",
		Long: `verify reads a snapshot completely without writing anything: PATH is an export
directory (snapshot-<index>/ holding one .gbsnap and snapshot.metadata, or its
parent when it holds exactly one), a .gbsnap file, or a raw Keel snapshot
stream. It checks Dragonboat's envelope (header checksum, every block checksum,
the tail, the payload checksum, the compression framing, the session table),
then Keel's stream (header, every file name and checksum, sizes, the trailer),
and for an export directory that the metadata agrees with both. It exits 1
naming the first problem.`,
		Args: args("PATH"),
		RunE: func(cmd *cobra.Command, a []string) error {
			rep, err := verifyPath(g, a[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(rep)
			}
			printVerify(g, rep)
			return nil
		},
	}
}

// findSnapshot resolves PATH to what verify and import read: the kind, the
// export directory (for "export"), and the file to read.
func findSnapshot(path string) (kind, dir, file string, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", "", "", fmt.Errorf("%w: %w", errNotKeel, err)
	}
	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return "", "", "", fmt.Errorf("%w: %s is not a regular file", errNotKeel, path)
		}
		f, err := os.Open(path)
		if err != nil {
			return "", "", "", fmt.Errorf("%w: %w", errOpen, err)
		}
		magic := make([]byte, 8)
		n, _ := io.ReadFull(f, magic)
		_ = f.Close()
		if n == 8 && string(magic) == "KEELSNAP" {
			return "stream", "", path, nil
		}
		return "gbsnap", "", path, nil
	}
	list := func(d string) (snaps, subs []string, meta bool, err error) {
		ents, err := os.ReadDir(d)
		if err != nil {
			return nil, nil, false, fmt.Errorf("%w: %w", errOpen, err)
		}
		for _, e := range ents {
			switch {
			case e.IsDir() && strings.HasPrefix(e.Name(), "snapshot-"):
				subs = append(subs, e.Name())
			case e.Type().IsRegular() && strings.HasSuffix(e.Name(), gbsnap.SnapshotSuffix):
				snaps = append(snaps, e.Name())
			case e.Name() == gbsnap.MetadataFilename:
				meta = true
			}
		}
		return snaps, subs, meta, nil
	}
	dir = path
	snaps, subs, meta, err := list(dir)
	if err != nil {
		return "", "", "", err
	}
	if len(snaps) == 0 && !meta {
		switch len(subs) {
		case 0:
			return "", "", "", fmt.Errorf("%w: %s holds no exported snapshot (no .gbsnap, no snapshot.metadata, no snapshot-* directory)", errNotKeel, path)
		case 1:
		default:
			return "", "", "", fmt.Errorf("%w: %s holds %d snapshot-* directories (%s); name one", errUsage, path, len(subs), strings.Join(subs, ", "))
		}
		dir = filepath.Join(path, subs[0])
		if snaps, _, meta, err = list(dir); err != nil {
			return "", "", "", err
		}
	}
	switch {
	case len(snaps) == 0:
		return "", "", "", fmt.Errorf("%w: %s: incomplete export: no .gbsnap file", errBadSnapshot, dir)
	case len(snaps) > 1:
		return "", "", "", fmt.Errorf("%w: %s: %d .gbsnap files (%s); Dragonboat's import needs exactly one", errBadSnapshot, dir, len(snaps), strings.Join(snaps, ", "))
	case !meta:
		return "", "", "", fmt.Errorf("%w: %s: incomplete export: no %s", errBadSnapshot, dir, gbsnap.MetadataFilename)
	}
	return "export", dir, filepath.Join(dir, snaps[0]), nil
}

// verifyPath verifies whatever PATH holds (with package gbsnap, the checks
// host.Import makes too); every content problem is an errBadSnapshot
// naming it, and a file that cannot be read is an errOpen.
func verifyPath(g *globals, path string) (verifyReport, error) {
	kind, dir, file, err := findSnapshot(path)
	if err != nil {
		return verifyReport{}, err
	}
	rep := verifyReport{Path: path, Kind: kind}
	st, err := os.Stat(file)
	if err != nil {
		return rep, fmt.Errorf("%w: %w", errOpen, err)
	}
	bar := g.progress(st.Size(), "verifying")
	defer bar.Close()
	progress := func(n int) { _ = bar.Add(n) }
	switch kind {
	case "stream":
		f, err := os.Open(file)
		if err != nil {
			return rep, fmt.Errorf("%w: %w", errOpen, err)
		}
		defer f.Close()
		r := &countReader{r: f, add: progress}
		if rep.Stream, err = gbsnap.VerifyStream(r); err != nil {
			return rep, verifyErr(file, err)
		}
		if err := gbsnap.ExpectEOF(r); err != nil {
			return rep, verifyErr(file, err)
		}
	case "gbsnap":
		rep.Gbsnap = file
		env, s, err := gbsnap.VerifyFile(file, progress)
		if err != nil {
			return rep, verifyErr("", err)
		}
		rep.Envelope, rep.Stream = &env, s
	default:
		rep.Gbsnap = file
		exp, err := gbsnap.VerifyExport(dir, progress)
		if err != nil {
			return rep, verifyErr("", err)
		}
		rep.Gbsnap = exp.Gbsnap
		rep.Envelope, rep.Stream, rep.Metadata = &exp.Envelope, exp.Stream, describeMetadata(exp.Metadata)
	}
	rep.OK = true
	return rep, nil
}

// verifyErr classifies a gbsnap error: damage exits like errProblems, a
// file that cannot be read like errOpen. name, when set, is prefixed.
func verifyErr(name string, err error) error {
	if name != "" {
		err = fmt.Errorf("%s: %w", name, err)
	}
	if errors.Is(err, gbsnap.ErrDamaged) {
		return fmt.Errorf("%w: %w", errBadSnapshot, err)
	}
	return fmt.Errorf("%w: %w", errOpen, err)
}

func describeMetadata(ss pb.Snapshot) *metadataInfo {
	m := &metadataInfo{Index: ss.Index, Term: ss.Term, ShardID: ss.ShardID, FileSize: ss.FileSize,
		Members: map[uint64]string{}, Imported: ss.Imported, raw: ss}
	for id, a := range ss.Membership.Addresses {
		m.Members[id] = a
	}
	for id := range ss.Membership.Removed {
		m.Removed = append(m.Removed, id)
	}
	sort.Slice(m.Removed, func(i, j int) bool { return m.Removed[i] < m.Removed[j] })
	return m
}

type countReader struct {
	r   io.Reader
	add func(int)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.add(n)
	return n, err
}

func printVerify(g *globals, r verifyReport) {
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "kind\t%s\n", r.Kind)
	if r.Gbsnap != "" {
		fmt.Fprintf(w, "file\t%s\n", filepath.Base(r.Gbsnap))
	}
	if m := r.Metadata; m != nil {
		fmt.Fprintf(w, "metadata\tindex %d, term %d, shard %d\n", m.Index, m.Term, m.ShardID)
		fmt.Fprintf(w, "members\t%s\n", host.FormatMembers(m.Members))
		if len(m.Removed) > 0 {
			fmt.Fprintf(w, "removed\t%v\n", m.Removed)
		}
	}
	if e := r.Envelope; e != nil {
		fmt.Fprintf(w, "envelope\tv%d, %s, %d blocks, %d sessions, payload checksum %s\n",
			e.Version, e.Compression, e.Blocks, e.Sessions, e.PayloadChecksum)
	}
	s := r.Stream
	fmt.Fprintf(w, "shard\t%d\n", s.ShardID)
	fmt.Fprintf(w, "sender replica\t%d\n", s.ReplicaID)
	fmt.Fprintf(w, "snapshot index\t%d\n", s.SnapshotIndex)
	fmt.Fprintf(w, "image applied index\t%d\n", s.ImageAppliedIndex)
	fmt.Fprintf(w, "files\t%d\n", s.FileCount)
	fmt.Fprintf(w, "total bytes\t%d\n", s.TotalBytes)
	_ = w.Flush()
	fmt.Fprintln(g.stdout)
	w = tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "FILE\tSIZE\n")
	for _, f := range s.Files {
		fmt.Fprintf(w, "%s\t%d\n", f.Name, f.Size)
	}
	_ = w.Flush()
	fmt.Fprintln(g.stdout, "OK")
}
