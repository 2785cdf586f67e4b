package engine

import (
	"io"
	"log/slog"
	"testing"
)

// quietLogger drops Pebble's messages below error.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// openTemp opens an engine under a fresh temp root on the OS filesystem.
func openTemp(t *testing.T) *Engine {
	t.Helper()
	e, err := OpenRoot(t.TempDir(), Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// write commits puts (and deletes, for a nil value) with applied index idx.
func write(t *testing.T, e *Engine, idx uint64, kv ...string) {
	t.Helper()
	b := e.NewBatch()
	defer b.Close()
	for i := 0; i+1 < len(kv); i += 2 {
		must(t, b.Put([]byte(kv[i]), []byte(kv[i+1])))
	}
	must(t, b.SetAppliedIndex(idx))
	must(t, b.Commit(false))
}

func scanAll(t *testing.T, v *View, start, end []byte, limit int) []string {
	t.Helper()
	var out []string
	must(t, v.Scan(start, end, limit, func(k, val []byte) bool {
		out = append(out, string(k)+"="+string(val))
		return true
	}))
	return out
}
