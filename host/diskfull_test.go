package host

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/lni/vfs"
)

// fatalRecorder is a DiskFullHandler that frees nothing and records Fatal.
type fatalRecorder struct {
	mu    sync.Mutex // guards fatal
	fatal []string
}

func (*fatalRecorder) Free(string, string, error) bool { return false }

func (h *fatalRecorder) Fatal(op, path string, _ error) {
	h.mu.Lock()
	h.fatal = append(h.fatal, op+" "+path)
	h.mu.Unlock()
}

// A file written and synced through DiskFullFS (created, opened for
// append, reused) holds what was written; a Sync after Close fails as
// os.File.Sync does and is not mistaken for a full disk.
func TestDiskFullFSSync(t *testing.T) {
	h := &fatalRecorder{}
	fs := DiskFullFS(vfs.Default, h)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		open func(path string) (vfs.File, error)
	}{
		{"create", fs.Create},
		{"append", fs.OpenForAppend},
		{"reuse", func(path string) (vfs.File, error) { return fs.ReuseForWrite(path, path+".reused") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "f.log")
			if tc.name != "create" {
				if err := os.WriteFile(path, []byte("old."), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f, err := tc.open(path)
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte("wal record "), 1000)
			for range 3 {
				if _, err := f.Write(data); err != nil {
					t.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					t.Fatalf("sync: %v", err)
				}
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("sync after close: %v, want os.ErrClosed", err)
			}
			read := path
			if tc.name == "reuse" {
				read = path + ".reused"
			}
			got, err := os.ReadFile(read)
			if err != nil {
				t.Fatal(err)
			}
			want := bytes.Repeat(data, 3)
			if tc.name == "append" {
				want = append([]byte("old."), want...)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("read back %d bytes, want %d", len(got), len(want))
			}
			_ = os.Remove(read)
		})
	}
	if len(h.fatal) != 0 {
		t.Fatalf("Fatal called: %v", h.fatal)
	}
}
