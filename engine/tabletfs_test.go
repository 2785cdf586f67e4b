package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// descriptorsUnder lists what this process holds open under dir, by name.
func descriptorsUnder(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	var out []string
	for _, ent := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", ent.Name()))
		if err != nil {
			continue // closed since ReadDir (the ReadDir's own descriptor)
		}
		if rel, err := filepath.Rel(dir, target); err == nil && !strings.HasPrefix(rel, "..") {
			out = append(out, rel)
		}
	}
	return out
}

// TestTabletHoldsFewDescriptors: an open WAL-less tablet holds its LOCK,
// its MANIFEST, one handle on its directory and the sstables the file cache
// has open, and nothing else: not five directory handles (Pebble's count)
// and no .log (Pebble creates one even without a WAL). After Close it
// holds nothing.
func TestTabletHoldsFewDescriptors(t *testing.T) {
	root := t.TempDir()
	root, err := filepath.EvalSymlinks(root)
	must(t, err)
	e, err := OpenRoot(root, Options{Logger: quietLogger()})
	must(t, err)
	must(t, e.SetIdentity(Identity{ShardID: 1, ReplicaID: 1}))
	write(t, e, 1, "a", "1", "b", "2")
	must(t, e.Sync())
	if _, err := e.Get([]byte("a")); err != nil {
		t.Fatal(err)
	}
	held := descriptorsUnder(t, root)
	var lock, manifest, dirs int
	for _, rel := range held {
		base := filepath.Base(rel)
		switch {
		case base == "LOCK":
			lock++
		case strings.HasPrefix(base, "MANIFEST-"):
			manifest++
		case strings.HasSuffix(base, ".sst"):
		case rel == filepath.Base(e.Dir()):
			dirs++
		default:
			t.Errorf("tablet holds %s open", rel)
		}
	}
	if lock != 1 || manifest != 1 || dirs != 1 {
		t.Errorf("tablet holds %v, want one LOCK, one MANIFEST, one directory and sstables", held)
	}
	must(t, e.Close())
	if held := descriptorsUnder(t, root); len(held) != 0 {
		t.Errorf("closed tablet still holds %v", held)
	}
}

// TestDirHandlesShared: every OpenDir of one directory shares one
// descriptor, which stays open until the last reference closes, and a
// second Close of a reference does not drop another's.
func TestDirHandlesShared(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	must(t, err)
	sub := filepath.Join(dir, "d")
	must(t, os.Mkdir(sub, 0o755))
	fs := newTabletFS(vfs.Default, true)
	var refs []vfs.File
	for i := 0; i < 3; i++ {
		f, err := fs.OpenDir(sub)
		must(t, err)
		refs = append(refs, f)
	}
	if held := descriptorsUnder(t, dir); len(held) != 1 {
		t.Fatalf("three OpenDirs hold %v, want one descriptor", held)
	}
	must(t, refs[0].Close())
	must(t, refs[0].Close())
	must(t, refs[1].Sync())
	must(t, refs[1].Close())
	if held := descriptorsUnder(t, dir); len(held) != 1 {
		t.Fatalf("with one reference left: %v, want one descriptor", held)
	}
	must(t, refs[2].Sync())
	must(t, refs[2].Close())
	if held := descriptorsUnder(t, dir); len(held) != 0 {
		t.Fatalf("after the last Close: %v still open", held)
	}
	if _, err := fs.OpenDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("OpenDir of a missing directory succeeded")
	}
}
