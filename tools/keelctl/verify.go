package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/plugin"
	"github.com/keel-db/keel/snapshot"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/spf13/cobra"
)

// verifyReport is `keelctl verify`'s output.
type verifyReport struct {
	Path     string        `json:"path"`
	Kind     string        `json:"kind"` // "export", "gbsnap" or "stream"
	Gbsnap   string        `json:"gbsnap,omitempty"`
	Envelope *envelopeInfo `json:"envelope,omitempty"`
	Metadata *metadataInfo `json:"metadata,omitempty"`
	Stream   streamInfo    `json:"stream"`
	OK       bool          `json:"ok"`
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

type streamInfo struct {
	ShardID           uint64     `json:"shard_id"`
	ReplicaID         uint64     `json:"replica_id"`
	SnapshotIndex     uint64     `json:"snapshot_index"`
	ImageAppliedIndex uint64     `json:"image_applied_index"`
	FileCount         uint32     `json:"file_count"`
	TotalBytes        uint64     `json:"total_bytes"`
	Files             []fileInfo `json:"files"`
}

type fileInfo struct {
	Name string `json:"name"`
	Size uint64 `json:"size"`
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
		return "", "", "", fmt.Errorf("%w: %v", errNotKeel, err)
	}
	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return "", "", "", fmt.Errorf("%w: %s is not a regular file", errNotKeel, path)
		}
		f, err := os.Open(path)
		if err != nil {
			return "", "", "", fmt.Errorf("%w: %v", errOpen, err)
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
			return nil, nil, false, fmt.Errorf("%w: %v", errOpen, err)
		}
		for _, e := range ents {
			switch {
			case e.IsDir() && strings.HasPrefix(e.Name(), "snapshot-"):
				subs = append(subs, e.Name())
			case e.Type().IsRegular() && strings.HasSuffix(e.Name(), snapshotSuffix):
				snaps = append(snaps, e.Name())
			case e.Name() == metadataFilename:
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
		return "", "", "", fmt.Errorf("%w: %s: incomplete export: no %s", errBadSnapshot, dir, metadataFilename)
	}
	return "export", dir, filepath.Join(dir, snaps[0]), nil
}

// verifyPath verifies whatever PATH holds; every content problem is an
// errBadSnapshot naming it.
func verifyPath(g *globals, path string) (verifyReport, error) {
	kind, dir, file, err := findSnapshot(path)
	if err != nil {
		return verifyReport{}, err
	}
	rep := verifyReport{Path: path, Kind: kind}
	bad := func(err error) (verifyReport, error) {
		return rep, fmt.Errorf("%w: %s: %v", errBadSnapshot, file, err)
	}
	if kind == "export" {
		rep.Gbsnap = file
		ss, err := readMetadata(filepath.Join(dir, metadataFilename))
		if err != nil {
			return rep, fmt.Errorf("%w: %s: %v", errBadSnapshot, filepath.Join(dir, metadataFilename), err)
		}
		rep.Metadata = describeMetadata(ss)
	}
	f, err := os.Open(file)
	if err != nil {
		return rep, fmt.Errorf("%w: %v", errOpen, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return rep, fmt.Errorf("%w: %v", errOpen, err)
	}
	bar := g.progress(st.Size(), "verifying")
	defer bar.Close()
	counted := func(r io.Reader) io.Reader { return &countReader{r: r, add: func(n int) { _ = bar.Add(n) }} }
	if kind == "stream" {
		r := counted(f)
		if rep.Stream, err = verifyStream(r); err != nil {
			return bad(err)
		}
		if err := expectEOF(r); err != nil {
			return bad(err)
		}
		rep.OK = true
		return rep, nil
	}
	er, err := openEnvelope(readerAtFunc(func(p []byte, off int64) (int, error) {
		n, err := f.ReadAt(p, off)
		_ = bar.Add(n)
		return n, err
	}), st.Size())
	if err != nil {
		return bad(err)
	}
	sessions, err := er.readSessions()
	if err != nil {
		return bad(err)
	}
	if rep.Stream, err = verifyStream(er.payload); err != nil {
		return bad(err)
	}
	env, err := er.finish()
	if err != nil {
		return bad(err)
	}
	env.Sessions = sessions
	rep.Envelope = &env
	if rep.Metadata != nil {
		if err := checkMetadata(rep.Metadata.raw, file, env, rep.Stream); err != nil {
			return rep, fmt.Errorf("%w: %s: %v", errBadSnapshot, filepath.Join(dir, metadataFilename), err)
		}
	}
	rep.OK = true
	return rep, nil
}

// checkMetadata checks that snapshot.metadata describes this .gbsnap the
// way tools.ImportSnapshot and Keel's RecoverFromSnapshot need.
func checkMetadata(ss pb.Snapshot, file string, env envelopeInfo, s streamInfo) error {
	switch {
	// Keel's index is the state machine's applied index at PrepareSnapshot;
	// Dragonboat's may be higher when the last entries never reach the state
	// machine (membership changes, a new leader's empty entry). It can never
	// be lower.
	case ss.Index < s.SnapshotIndex:
		return fmt.Errorf("metadata index %d is below the stream's snapshot index %d", ss.Index, s.SnapshotIndex)
	case ss.ShardID != s.ShardID:
		return fmt.Errorf("metadata shard %d, the stream's shard is %d", ss.ShardID, s.ShardID)
	case ss.FileSize != env.FileSize:
		return fmt.Errorf("metadata file size %d, %s is %d bytes", ss.FileSize, filepath.Base(file), env.FileSize)
	case !bytes.Equal(ss.Checksum, env.checksum):
		return fmt.Errorf("metadata checksum %x, the payload's is %x", ss.Checksum, env.checksum)
	case ss.Type != pb.OnDiskStateMachine:
		return fmt.Errorf("metadata state machine type %s, Keel's is %s", ss.Type, pb.OnDiskStateMachine)
	case ss.Dummy || ss.Witness:
		return errors.New("metadata describes a dummy or witness snapshot, which holds no data")
	case ss.Term == 0:
		return errors.New("metadata term is 0")
	case len(ss.Membership.Addresses) == 0:
		return errors.New("metadata has no members")
	case len(ss.Files) > 0:
		return fmt.Errorf("metadata lists %d external files; Keel writes none", len(ss.Files))
	case filepath.Base(ss.Filepath) != filepath.Base(file):
		// tools.ImportSnapshot names the imported file after the metadata.
		return fmt.Errorf("metadata names %s, the file is %s", filepath.Base(ss.Filepath), filepath.Base(file))
	}
	return nil
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

// verifyStream reads one Keel stream from r and checks everything Install
// checks before it opens the image, without writing a byte: the files go
// to a discarding filesystem that only records names and sizes.
func verifyStream(r io.Reader) (streamInfo, error) {
	var hb [snapshot.HeaderSize]byte
	n, _ := io.ReadFull(r, hb[:])
	// The shard is taken from the header so ReadStream accepts any shard;
	// the header checksum, checked by ReadStream, covers it.
	var shard uint64
	if n >= 24 {
		shard = beUint64(hb[16:24])
	}
	dfs := newDiscardFS()
	h, err := snapshot.ReadStream(io.MultiReader(bytes.NewReader(hb[:n]), r), dfs, "/verify", shard, snapshot.Options{}, nil)
	if err != nil {
		return streamInfo{}, err
	}
	if h.ImageAppliedIndex != h.SnapshotIndex {
		return streamInfo{}, fmt.Errorf("%w: image at %d, snapshot index %d", snapshot.ErrInexact, h.ImageAppliedIndex, h.SnapshotIndex)
	}
	return streamInfo{
		ShardID: h.ShardID, ReplicaID: h.ReplicaID, SnapshotIndex: h.SnapshotIndex,
		ImageAppliedIndex: h.ImageAppliedIndex, FileCount: h.FileCount, TotalBytes: h.TotalBytes,
		Files: dfs.files,
	}, nil
}

func expectEOF(r io.Reader) error {
	var one [1]byte
	n, err := r.Read(one[:])
	if n > 0 {
		return errors.New("trailing bytes after the stream's trailer")
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err == nil {
		return expectEOF(r)
	}
	return nil
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

// discardFS is a filesystem for ReadStream that keeps only the directory
// tree in memory and throws file contents away, recording each file's
// name and size.
type discardFS struct {
	vfs.FS
	files []fileInfo
}

func newDiscardFS() *discardFS {
	fs := &discardFS{FS: vfs.NewMem(), files: []fileInfo{}}
	_ = fs.MkdirAll("/verify", 0o755)
	return fs
}

func (d *discardFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := d.FS.Create(name, cat)
	if err != nil {
		return nil, err
	}
	d.files = append(d.files, fileInfo{Name: d.PathBase(name)})
	return &discardFile{File: f, fs: d, idx: len(d.files) - 1}, nil
}

type discardFile struct {
	vfs.File
	fs  *discardFS
	idx int
}

func (f *discardFile) Write(p []byte) (int, error) {
	// files may have grown (and moved) since Create: index, don't hold.
	f.fs.files[f.idx].Size += uint64(len(p))
	return len(p), nil
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

type readerAtFunc func(p []byte, off int64) (int, error)

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }

func printVerify(g *globals, r verifyReport) {
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "kind\t%s\n", r.Kind)
	if r.Gbsnap != "" {
		fmt.Fprintf(w, "file\t%s\n", filepath.Base(r.Gbsnap))
	}
	if m := r.Metadata; m != nil {
		fmt.Fprintf(w, "metadata\tindex %d, term %d, shard %d\n", m.Index, m.Term, m.ShardID)
		fmt.Fprintf(w, "members\t%s\n", plugin.FormatMembers(m.Members))
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
