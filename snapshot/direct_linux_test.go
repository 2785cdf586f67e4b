package snapshot

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestReceivedFilesExactWithODirect streams files of every size class
// around the O_DIRECT alignment and buffer (empty, under a block, one
// block, a block and a byte, just under, at and over one buffer, several
// buffers and a tail) and checks that what ReadStream writes is the same
// bytes, through O_DIRECT and through the page cache.
func TestReceivedFilesExactWithODirect(t *testing.T) {
	src := t.TempDir()
	probe, err := createReceivedFile(vfs.Default, filepath.Join(src, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	d, direct := probe.(*directFile)
	direct = direct && d.direct
	_ = probe.Close()
	_ = os.Remove(filepath.Join(src, "probe"))
	if !direct {
		t.Skipf("the filesystem of %s refuses O_DIRECT: only the buffered path would run", src)
	}

	sizes := []int{0, 1, directAlign - 1, directAlign, directAlign + 1, ChunkSize + 7,
		directBuf - 1, directBuf, directBuf + 1, 3*directBuf + directAlign + 13}
	var files []File
	var total uint64
	want := map[string][]byte{}
	for i, n := range sizes {
		name := fmt.Sprintf("%06d.sst", i+1)
		b := make([]byte, n)
		_, _ = rand.Read(b)
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = b
		files = append(files, File{Name: name, Size: uint64(n)})
		total += uint64(n)
	}
	h := Header{ShardID: 7, SnapshotIndex: 42, ImageAppliedIndex: 42, FileCount: uint32(len(files)), TotalBytes: total}
	var stream bytes.Buffer
	if err := WriteStream(&stream, h, vfs.Default, src, files, nil); err != nil {
		t.Fatal(err)
	}

	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprintf("buffered=%v", buffered), func(t *testing.T) {
			noDirect = buffered
			defer func() { noDirect = false }()
			dst := t.TempDir()
			got, err := ReadStream(bytes.NewReader(stream.Bytes()), vfs.Default, dst, 7, Options{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.TotalBytes != total || got.FileCount != uint32(len(files)) {
				t.Fatalf("header %+v", got)
			}
			for name, b := range want {
				have, err := os.ReadFile(filepath.Join(dst, name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(have, b) {
					t.Fatalf("%s: %d bytes read back, want %d, equal prefix %d", name, len(have), len(b), commonPrefix(have, b))
				}
			}
		})
	}
}

// misalignFS hands every write to its files from an unaligned copy of the
// caller's buffer, as a wrapper that copies might: the kernel refuses such
// a write under O_DIRECT (EINVAL).
type misalignFS struct{ vfs.FS }

func (fs misalignFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return misalignFile{f}, err
}

type misalignFile struct{ vfs.File }

func (f misalignFile) Write(p []byte) (int, error) {
	b := make([]byte, len(p)+1)[1:]
	copy(b, p)
	return f.File.Write(b)
}

// A write O_DIRECT refuses is written again through the page cache, and
// the file is exact.
func TestReceivedFileFallsBackWhenODirectRefusesAWrite(t *testing.T) {
	dir := t.TempDir()
	rf, err := createReceivedFile(misalignFS{vfs.Default}, filepath.Join(dir, "000001.sst"))
	if err != nil {
		t.Fatal(err)
	}
	d, ok := rf.(*directFile)
	if !ok {
		t.Skip("no O_DIRECT here")
	}
	want := make([]byte, 2*directBuf+123)
	_, _ = rand.Read(want)
	if _, err := d.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
	if d.direct {
		t.Fatal("still writing with O_DIRECT after an unaligned write: the refusal was not seen")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "000001.sst"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%d bytes read back, want %d, equal prefix %d", len(got), len(want), commonPrefix(got, want))
	}
}

// failFS's files fail every write after the first.
type failFS struct{ vfs.FS }

func (fs failFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return &failFile{File: f}, err
}

type failFile struct {
	vfs.File
	writes int
}

var errInjected = errors.New("injected write failure")

func (f *failFile) Write(p []byte) (int, error) {
	f.writes++
	if f.writes > 1 {
		return 0, errInjected
	}
	return f.File.Write(p)
}

// A write that fails on the writer goroutine fails the file: a later
// Write or Finish returns an error, never success.
func TestReceivedFileReportsAFailedWrite(t *testing.T) {
	rf, err := createReceivedFile(failFS{vfs.Default}, filepath.Join(t.TempDir(), "000001.sst"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rf.(*directFile); !ok {
		t.Skip("no O_DIRECT here")
	}
	defer func() { _ = rf.Close() }()
	buf := make([]byte, directBuf)
	var werr error
	for i := 0; i < 6 && werr == nil; i++ {
		_, werr = rf.Write(buf)
	}
	if werr != nil && !errors.Is(werr, errInjected) {
		t.Fatalf("Write after a failed write: %v, want the write's own error", werr)
	}
	ferr := rf.Finish()
	if !errors.Is(ferr, errInjected) {
		t.Fatalf("Finish after a failed write: %v (Write: %v), want the write's error", ferr, werr)
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
