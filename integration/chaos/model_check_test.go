package chaos

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestModel checks the checker: histories a broken store could produce are
// refused, legal ones (including unknown writes) accepted, and a refused
// one can be visualised.
func TestModel(t *testing.T) {
	put := func(c int, v string, call, ret int64, o outcome) *record {
		return &record{Client: c, Kind: opPut, Key: "k", Value: v, Call: call, Return: ret, Outcome: o}
	}
	get := func(c int, found bool, v string, call, ret int64) *record {
		return &record{Client: c, Kind: opGet, Key: "k", Found: found, Got: v, Call: call, Return: ret, Outcome: outcomeOK}
	}
	cas := func(c int, old, v string, ok bool, call, ret int64, o outcome) *record {
		return &record{Client: c, Kind: opTxn, Key: "k", Cond: condEquals, CondValue: old, Value: v, Succeeded: ok,
			Call: call, Return: ret, Outcome: o}
	}
	cases := []struct {
		name string
		h    []*record
		ok   bool
	}{
		{"read after write", []*record{put(0, "a", 0, 10, outcomeOK), get(1, true, "a", 20, 30)}, true},
		{"lost acknowledged write", []*record{put(0, "a", 0, 10, outcomeOK), get(1, false, "", 20, 30)}, false},
		{"stale read", []*record{put(0, "a", 0, 10, outcomeOK), put(0, "b", 11, 20, outcomeOK), get(1, true, "a", 30, 40)}, false},
		{"unknown write seen later", []*record{put(0, "a", 0, 10, outcomeUnknown), get(1, true, "a", 100, 110)}, true},
		{"unknown write never seen", []*record{put(0, "a", 0, 10, outcomeUnknown), get(1, false, "", 100, 110)}, true},
		{"unknown write cannot go back in time", []*record{put(2, "b", 0, 5, outcomeOK), get(1, true, "a", 6, 7), put(0, "a", 50, 60, outcomeUnknown)}, false},
		{"cas success", []*record{put(0, "a", 0, 10, outcomeOK), cas(1, "a", "b", true, 20, 30, outcomeOK), get(2, true, "b", 40, 50)}, true},
		{"cas must fail on mismatch", []*record{put(0, "a", 0, 10, outcomeOK), cas(1, "x", "b", true, 20, 30, outcomeOK)}, false},
		{"failed cas changes nothing", []*record{put(0, "a", 0, 10, outcomeOK), cas(1, "x", "b", false, 20, 30, outcomeOK), get(2, true, "b", 40, 50)}, false},
		{"unknown cas applied", []*record{put(0, "a", 0, 10, outcomeOK), cas(1, "a", "b", false, 20, 30, outcomeUnknown), get(2, true, "b", 40, 50)}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, info := porcupine.CheckOperationsVerbose(kvModel, operations(c.h), 0)
			if got := res == porcupine.Ok; got != c.ok {
				t.Fatalf("linearizable = %v (%v), want %v", got, res, c.ok)
			}
			if !c.ok {
				p := filepath.Join(t.TempDir(), "v.html")
				if err := porcupine.VisualizePath(kvModel, info, p); err != nil {
					t.Fatal(err)
				}
				if st, err := os.Stat(p); err != nil || st.Size() == 0 {
					t.Fatalf("visualisation not written: %v", err)
				}
			}
		})
	}
}
