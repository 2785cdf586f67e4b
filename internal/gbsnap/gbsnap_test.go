package gbsnap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/keel-db/keel/snapshot"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

const testIndex = 7

// buildImage writes keys random values of valueSize bytes into a real
// Pebble image at applied index testIndex and returns its closed directory.
func buildImage(t testing.TB, keys, valueSize int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	e, err := engine.Open(dir, engine.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b := e.NewBatch()
	for i := 0; i < keys; i++ {
		v := make([]byte, valueSize)
		for j := range v {
			v[j] = byte(r.Uint32())
		}
		if err := b.Put([]byte(fmt.Sprintf("key-%06d", i)), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetAppliedIndex(testIndex); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeExport writes the export directory of image into parent, laid out
// as Dragonboat's exporter lays it out, and returns its path.
func writeExport(t testing.TB, parent, image string, ct pb.CompressionType) string {
	t.Helper()
	name := fmt.Sprintf("snapshot-%016X", testIndex)
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := snapshot.ListImage(vfs.Default, image)
	if err != nil {
		t.Fatal(err)
	}
	h := snapshot.Header{ShardID: 3, ReplicaID: 1, SnapshotIndex: testIndex, ImageAppliedIndex: testIndex}
	gb := filepath.Join(dir, name+SnapshotSuffix)
	size, sum, err := WriteEnvelope(gb, ct, func(w io.Writer) error {
		return snapshot.WriteStream(w, h, vfs.Default, image, files, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	ss := pb.Snapshot{Filepath: gb, FileSize: size, Index: testIndex, Term: 2, Checksum: sum, ShardID: 3,
		Type: pb.OnDiskStateMachine, Membership: pb.Membership{Addresses: map[uint64]string{1: "127.0.0.1:1"}}}
	if err := WriteMetadata(filepath.Join(dir, MetadataFilename), &ss); err != nil {
		t.Fatal(err)
	}
	return dir
}

func smallExport(t testing.TB) string {
	t.Helper()
	return writeExport(t, t.TempDir(), buildImage(t, 50, 40), pb.Snappy)
}

func gbsnapOf(t testing.TB, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*"+SnapshotSuffix))
	if len(m) != 1 {
		t.Fatalf("want one %s in %s, got %v", SnapshotSuffix, dir, m)
	}
	return m[0]
}

func TestVerifyExportRoundTrip(t *testing.T) {
	// 3 MiB of incompressible values: more than one 2 MiB block either way.
	image := buildImage(t, 768, 4<<10)
	for _, ct := range []pb.CompressionType{pb.NoCompression, pb.Snappy} {
		t.Run(ct.String(), func(t *testing.T) {
			dir := writeExport(t, t.TempDir(), image, ct)
			var read int
			exp, err := VerifyExport(dir, func(n int) { read += n })
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(exp.Gbsnap)
			if err != nil {
				t.Fatal(err)
			}
			if exp.Envelope.FileSize != uint64(st.Size()) || exp.Envelope.Blocks < 2 || exp.Envelope.Sessions != 0 ||
				exp.Envelope.Version != EnvelopeVersion || read < int(st.Size()) {
				t.Fatalf("envelope %+v, file %d bytes, progress %d", exp.Envelope, st.Size(), read)
			}
			s := exp.Stream
			var total uint64
			for _, f := range s.Files {
				total += f.Size
			}
			if s.ShardID != 3 || s.SnapshotIndex != testIndex || int(s.FileCount) != len(s.Files) || total != s.TotalBytes || total < 3<<20 {
				t.Fatalf("stream %+v", s)
			}
			if exp.Metadata.Index != testIndex || !bytes.Equal(exp.Metadata.Checksum, exp.Envelope.Checksum) {
				t.Fatalf("metadata %+v", exp.Metadata)
			}
		})
	}
}

func flip(t testing.TB, path string, off int64, mask byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= mask
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func resize(t testing.TB, path string, delta int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()+delta); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyExportCatchesDamage(t *testing.T) {
	meta := func(dir string) string { return filepath.Join(dir, MetadataFilename) }
	rewriteMeta := func(t *testing.T, dir string, edit func(*pb.Snapshot)) {
		ss, err := ReadMetadata(meta(dir))
		if err != nil {
			t.Fatal(err)
		}
		edit(&ss)
		if err := os.Remove(meta(dir)); err != nil {
			t.Fatal(err)
		}
		if err := WriteMetadata(meta(dir), &ss); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]func(t *testing.T, dir string){
		"gbsnap truncated to half": func(t *testing.T, dir string) {
			st, _ := os.Stat(gbsnapOf(t, dir))
			resize(t, gbsnapOf(t, dir), -st.Size()/2)
		},
		"gbsnap missing its last byte": func(t *testing.T, dir string) { resize(t, gbsnapOf(t, dir), -1) },
		"gbsnap with a byte appended":  func(t *testing.T, dir string) { resize(t, gbsnapOf(t, dir), 1) },
		"gbsnap header length flipped": func(t *testing.T, dir string) { flip(t, gbsnapOf(t, dir), 0, 0x01) },
		"gbsnap header byte flipped":   func(t *testing.T, dir string) { flip(t, gbsnapOf(t, dir), 20, 0x40) },
		"gbsnap padding byte set":      func(t *testing.T, dir string) { flip(t, gbsnapOf(t, dir), 1000, 0x01) },
		"gbsnap payload byte flipped": func(t *testing.T, dir string) {
			st, _ := os.Stat(gbsnapOf(t, dir))
			flip(t, gbsnapOf(t, dir), st.Size()/2, 0x40)
		},
		"gbsnap tail flipped": func(t *testing.T, dir string) {
			st, _ := os.Stat(gbsnapOf(t, dir))
			flip(t, gbsnapOf(t, dir), st.Size()-3, 0x01)
		},
		"gbsnap empty":     func(t *testing.T, dir string) { resize(t, gbsnapOf(t, dir), -fileSize(t, gbsnapOf(t, dir))) },
		"gbsnap missing":   func(t *testing.T, dir string) { must(t, os.Remove(gbsnapOf(t, dir))) },
		"two gbsnap files": func(t *testing.T, dir string) { must(t, os.WriteFile(filepath.Join(dir, "other.gbsnap"), nil, 0o644)) },
		"gbsnap is a dir": func(t *testing.T, dir string) {
			p := gbsnapOf(t, dir)
			must(t, os.Remove(p))
			must(t, os.Mkdir(p, 0o755))
		},
		"metadata garbage": func(t *testing.T, dir string) { must(t, os.WriteFile(meta(dir), []byte("not metadata at all"), 0o644)) },
		"metadata empty":   func(t *testing.T, dir string) { must(t, os.WriteFile(meta(dir), nil, 0o644)) },
		"metadata flipped": func(t *testing.T, dir string) { flip(t, meta(dir), 12, 0x40) },
		"metadata missing": func(t *testing.T, dir string) { must(t, os.Remove(meta(dir))) },
		"metadata too long": func(t *testing.T, dir string) {
			must(t, os.WriteFile(meta(dir), make([]byte, maxMetadataSize+1), 0o644))
		},
		"metadata hashes but does not decode": func(t *testing.T, dir string) {
			junk := []byte{0xff, 0xff, 0xff}
			must(t, os.WriteFile(meta(dir), append(FlagFileHash(junk), junk...), 0o644))
		},
		"metadata of another shard": func(t *testing.T, dir string) { rewriteMeta(t, dir, func(ss *pb.Snapshot) { ss.ShardID = 4 }) },
		"metadata index below the stream's": func(t *testing.T, dir string) {
			rewriteMeta(t, dir, func(ss *pb.Snapshot) { ss.Index = testIndex - 1 })
		},
		"metadata checksum differs": func(t *testing.T, dir string) {
			rewriteMeta(t, dir, func(ss *pb.Snapshot) { ss.Checksum = []byte{1, 2, 3, 4} })
		},
		"metadata size differs": func(t *testing.T, dir string) { rewriteMeta(t, dir, func(ss *pb.Snapshot) { ss.FileSize++ }) },
		"metadata names another file": func(t *testing.T, dir string) {
			rewriteMeta(t, dir, func(ss *pb.Snapshot) { ss.Filepath = "/elsewhere/other.gbsnap" })
		},
		"metadata of a dummy snapshot": func(t *testing.T, dir string) { rewriteMeta(t, dir, func(ss *pb.Snapshot) { ss.Dummy = true }) },
		"metadata with no members": func(t *testing.T, dir string) {
			rewriteMeta(t, dir, func(ss *pb.Snapshot) { ss.Membership.Addresses = nil })
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := smallExport(t)
			damage(t, dir)
			_, err := VerifyExport(dir, nil)
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("VerifyExport: got %v, want ErrDamaged", err)
			}
			t.Logf("%v", err)
		})
	}
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestVerifyCatchesAnyFlip flips random bytes of a .gbsnap: the envelope's
// checksums cover every byte, so each flip is caught as damage.
func TestVerifyCatchesAnyFlip(t *testing.T) {
	dir := smallExport(t)
	orig, err := os.ReadFile(gbsnapOf(t, dir))
	must(t, err)
	r := rand.New(rand.NewPCG(testutil.Seed(t), 3))
	for i := 0; i < 300; i++ {
		b := append([]byte(nil), orig...)
		off := r.IntN(len(b))
		if i < 30 {
			off = r.IntN(64) // the header's protobuf
		}
		b[off] ^= byte(1 + r.IntN(255))
		if _, _, err := VerifyGbsnap(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrDamaged) {
			t.Fatalf("flip at %d of %d: got %v, want ErrDamaged", off, len(b), err)
		}
	}
}

// failingReaderAt fails every read that touches [from, to) with err.
type failingReaderAt struct {
	r        io.ReaderAt
	from, to int64
	err      error
}

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < f.to && off+int64(len(p)) > f.from {
		return 0, f.err
	}
	return f.r.ReadAt(p, off)
}

// TestVerifyIOErrorIsNotDamage: a read error from the disk is returned as
// itself, never as ErrDamaged, wherever in the file it happens.
func TestVerifyIOErrorIsNotDamage(t *testing.T) {
	b, err := os.ReadFile(gbsnapOf(t, smallExport(t)))
	must(t, err)
	eio := &fs.PathError{Op: "read", Path: "x.gbsnap", Err: syscall.EIO}
	n := int64(len(b))
	for name, span := range map[string][2]int64{
		"header":       {0, 1},
		"first block":  {envHeaderSize, envHeaderSize + 1},
		"middle block": {n / 2, n/2 + 1},
		"tail":         {n - 1, n},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := VerifyGbsnap(failingReaderAt{r: bytes.NewReader(b), from: span[0], to: span[1], err: eio}, n)
			if errors.Is(err, ErrDamaged) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("got %v, want the injected EIO and not ErrDamaged", err)
			}
		})
	}
	if _, err := VerifyExport(filepath.Join(t.TempDir(), "nope"), nil); errors.Is(err, ErrDamaged) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing directory: got %v, want ErrNotExist and not ErrDamaged", err)
	}
}

// TestVerifyLeavesFilesAlone: verification only reads.
func TestVerifyLeavesFilesAlone(t *testing.T) {
	dir := smallExport(t)
	before := testutil.Tree(t, dir)
	if _, err := VerifyExport(dir, nil); err != nil {
		t.Fatal(err)
	}
	if after := testutil.Tree(t, dir); strings.Join(before, "\n") != strings.Join(after, "\n") {
		t.Fatalf("files changed:\n%v\n%v", before, after)
	}
}

// FuzzVerifyGbsnap: no input panics, and every failure on in-memory bytes
// (which cannot fail to read) is ErrDamaged.
//
//	go test -run '^$' -fuzz FuzzVerifyGbsnap -fuzztime 60s -fuzzminimizetime 5s ./internal/gbsnap
//
// Each run verifies a ~5 KB file, so the default minimization of a new
// input (up to a minute, shown as 0 execs/sec) dominates without
// -fuzzminimizetime.
func FuzzVerifyGbsnap(f *testing.F) {
	b, err := os.ReadFile(gbsnapOf(f, smallExport(f)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:envHeaderSize+envTailSize])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, _, err := VerifyGbsnap(bytes.NewReader(data), int64(len(data))); err != nil && !errors.Is(err, ErrDamaged) {
			t.Fatalf("error is not ErrDamaged: %v", err)
		}
	})
}

// FuzzParseMetadata: no input panics; failures are ErrDamaged.
func FuzzParseMetadata(f *testing.F) {
	b, err := os.ReadFile(filepath.Join(smallExport(f), MetadataFilename))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Fix the hash up so the fuzzer reaches the protobuf decoder.
		if len(data) >= 8 {
			copy(data[:8], FlagFileHash(data[8:]))
		}
		if _, err := ParseMetadata(data); err != nil && !errors.Is(err, ErrDamaged) {
			t.Fatalf("error is not ErrDamaged: %v", err)
		}
	})
}
