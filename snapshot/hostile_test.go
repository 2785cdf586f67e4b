package snapshot_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/snapshot"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// craftFile is one file of a hand-built stream.
type craftFile struct {
	name string
	data []byte
}

// craft builds a stream independently of the package's writer, from the
// format in doc.go, with correct checksums unless a test breaks them after.
func craft(h snapshot.Header, files []craftFile) []byte {
	var b []byte
	b = append(b, "KEELSNAP"...)
	b = binary.BigEndian.AppendUint32(b, snapshot.FormatVersion)
	b = binary.BigEndian.AppendUint32(b, h.FileCount)
	b = binary.BigEndian.AppendUint64(b, h.ShardID)
	b = binary.BigEndian.AppendUint64(b, h.ReplicaID)
	b = binary.BigEndian.AppendUint64(b, h.SnapshotIndex)
	b = binary.BigEndian.AppendUint64(b, h.ImageAppliedIndex)
	b = binary.BigEndian.AppendUint64(b, h.TotalBytes)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	for _, f := range files {
		start := len(b)
		b = binary.BigEndian.AppendUint16(b, uint16(len(f.name)))
		b = append(b, f.name...)
		b = binary.BigEndian.AppendUint64(b, uint64(len(f.data)))
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
		for off := 0; off < len(f.data); off += snapshot.ChunkSize {
			end := min(off+snapshot.ChunkSize, len(f.data))
			b = binary.BigEndian.AppendUint32(b, uint32(end-off))
			b = append(b, f.data[off:end]...)
		}
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(f.data, castagnoli))
	}
	sum := crc32.Checksum(b, castagnoli)
	b = append(b, "KEELEND\x00"...)
	return binary.BigEndian.AppendUint32(b, sum)
}

func craftHeader(files []craftFile) snapshot.Header {
	h := snapshot.Header{ShardID: 1, ReplicaID: 9, SnapshotIndex: 5, ImageAppliedIndex: 5, FileCount: uint32(len(files))}
	for _, f := range files {
		h.TotalBytes += uint64(len(f.data))
	}
	return h
}

// hostileCase is a stream the receiver must refuse.
type hostileCase struct {
	name   string
	stream []byte
	want   error // nil: any error
}

func hostileCases(valid []byte) []hostileCase {
	ok := []craftFile{{"000001.sst", []byte("data")}}
	var cases []hostileCase
	named := func(name string) hostileCase {
		fs := []craftFile{{name, []byte("x")}}
		return hostileCase{"name " + name, craft(craftHeader(fs), fs), snapshot.ErrBadFileName}
	}
	for _, n := range []string{"../000001.sst", "/etc/passwd", "a/000001.sst", "..", ".", ".hidden",
		"CURRENT", "LOCK", "000001.sst/..", "000001.exe", "MANIFEST-", "marker.x.000001.y", "0001\x00.sst", "000001.sst\\x"} {
		cases = append(cases, named(n))
	}
	dup := []craftFile{{"000001.sst", []byte("a")}, {"000001.sst", []byte("b")}}
	cases = append(cases, hostileCase{"duplicate", craft(craftHeader(dup), dup), snapshot.ErrBadFileName})

	h := craftHeader(ok)
	h.FileCount = 1 << 31
	cases = append(cases, hostileCase{"huge file count", craft(h, ok), snapshot.ErrLimit})
	h = craftHeader(ok)
	h.TotalBytes = 1 << 62
	cases = append(cases, hostileCase{"huge total", craft(h, ok), snapshot.ErrLimit})
	h = craftHeader(ok)
	h.TotalBytes = 2
	cases = append(cases, hostileCase{"file larger than total", craft(h, ok), snapshot.ErrCorrupt})
	h = craftHeader(ok)
	h.TotalBytes = 100
	cases = append(cases, hostileCase{"total larger than files", craft(h, ok), snapshot.ErrCorrupt})
	h = craftHeader(ok)
	h.FileCount = 2
	cases = append(cases, hostileCase{"missing file", craft(h, ok), snapshot.ErrCorrupt})
	h = craftHeader(ok)
	h.ShardID = 2
	cases = append(cases, hostileCase{"another shard", craft(h, ok), snapshot.ErrWrongShard})
	h = craftHeader(ok)
	h.ImageAppliedIndex = 6
	cases = append(cases, hostileCase{"inexact image", craft(h, ok), snapshot.ErrInexact})
	// Valid framing around bytes that are not a Pebble database.
	cases = append(cases, hostileCase{"not pebble", craft(craftHeader(ok), ok), nil})

	if len(valid) == 0 {
		return cases
	}
	bad := append([]byte(nil), valid...)
	copy(bad, "KEELSNAQ")
	cases = append(cases, hostileCase{"wrong magic", bad, snapshot.ErrCorrupt})
	bad = append([]byte(nil), valid...)
	binary.BigEndian.PutUint32(bad[8:], 2)
	binary.BigEndian.PutUint32(bad[56:], crc32.Checksum(bad[:56], castagnoli))
	cases = append(cases, hostileCase{"future version", bad, snapshot.ErrCorrupt})
	// A chunk length beyond ChunkSize with otherwise valid framing.
	big := craft(craftHeader(ok), ok)
	binary.BigEndian.PutUint32(big[snapshot.HeaderSize+2+len("000001.sst")+8+4:], snapshot.ChunkSize+1)
	cases = append(cases, hostileCase{"oversized chunk", big, snapshot.ErrCorrupt})
	cases = append(cases, hostileCase{"trailing garbage only", append(append([]byte(nil), valid[:len(valid)-12]...), bytes.Repeat([]byte{0}, 12)...), snapshot.ErrCorrupt})
	return cases
}

func TestHostileStreamsLeaveStateIntact(t *testing.T) {
	src := newReplica(t, 1, 1)
	src.fill("a", 300, 50)
	valid, _ := src.stream(nil)

	dst := newReplica(t, 1, 2)
	dst.fill("mine", 20, 5)
	want := dst.hash()
	check := func(name string, stream []byte, wantErr error) {
		t.Helper()
		err := dst.recover(stream)
		if err == nil {
			t.Fatalf("%s: hostile stream accepted", name)
		}
		if wantErr != nil && !errors.Is(err, wantErr) {
			t.Fatalf("%s: error %v, want %v", name, err, wantErr)
		}
		if got := dst.hash(); got != want {
			t.Fatalf("%s: state changed to %+v", name, got)
		}
	}
	for _, c := range hostileCases(valid) {
		check(c.name, c.stream, c.want)
	}
	// Truncated at every offset of the header, file headers and trailer
	// region, and at a spread of offsets through the data.
	rng := rand.New(rand.NewSource(1))
	offsets := map[int]bool{}
	for i := 0; i < 200 && i < len(valid); i++ {
		offsets[i] = true
		offsets[len(valid)-1-i] = true
	}
	for i := 0; i < 200; i++ {
		offsets[rng.Intn(len(valid))] = true
	}
	for off := range offsets {
		check("truncated", valid[:off], snapshot.ErrCorrupt)
	}
	// Every single bit flip changes the data or a checksum.
	seed := int64(42)
	rng = rand.New(rand.NewSource(seed))
	for i := 0; i < 300; i++ {
		bad := append([]byte(nil), valid...)
		pos := rng.Intn(len(bad))
		if i < 64 {
			pos = i // the header
		}
		bad[pos] ^= 1 << uint(rng.Intn(8))
		check("bit flip", bad, nil)
	}
	t.Logf("seed %d, stream %d bytes", seed, len(valid))
	if err := dst.recover(valid); err != nil {
		t.Fatalf("the valid stream after all that: %v", err)
	}
	dst.assertNoLeftovers()
}

// Writes never escape the target directory, whatever the names.
func TestReadStreamWritesOnlyIntoDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "in")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range hostileCases(nil) {
		if c.stream == nil {
			continue
		}
		_, _ = snapshot.ReadStream(bytes.NewReader(c.stream), vfs.Default, dir, 1, snapshot.Options{}, nil)
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 1 {
		t.Fatalf("parent holds %d entries", len(ents))
	}
}

func FuzzReadStream(f *testing.F) {
	ok := []craftFile{{"000001.sst", []byte("data")}, {"MANIFEST-000002", bytes.Repeat([]byte("m"), 300)}}
	f.Add(craft(craftHeader(ok), ok))
	for _, c := range hostileCases(craft(craftHeader(ok), ok)) {
		f.Add(c.stream)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := vfs.NewMem()
		if err := fs.MkdirAll("in", 0o755); err != nil {
			t.Fatal(err)
		}
		h, err := snapshot.ReadStream(bytes.NewReader(data), fs, "in", 1, snapshot.Options{MaxFiles: 64, MaxBytes: 1 << 20}, nil)
		if err != nil {
			return
		}
		names, _ := fs.List("in")
		if uint32(len(names)) != h.FileCount {
			t.Fatalf("accepted stream declares %d files, wrote %d", h.FileCount, len(names))
		}
		for _, n := range names {
			if !snapshot.ValidFileName(n) {
				t.Fatalf("wrote %q", n)
			}
		}
	})
}
