package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestWriteBatchBadFlagExit2: a --write-batch out of range or not a number
// is a usage error: exit 2, one line, nothing started.
func TestWriteBatchBadFlagExit2(t *testing.T) {
	for _, v := range []string{"0", "-1", "1025", "abc", ""} {
		t.Run(v, func(t *testing.T) {
			code, out := runKeeld(t, t.TempDir(), "--write-batch", v)
			if code != 2 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "keeld: ") || !strings.Contains(out, "write-batch") {
				t.Fatalf("exit %d, output %q; want 2 and one line about --write-batch", code, out)
			}
		})
	}
}

// TestWriteBatchServes: keeld serves PUT, GET and DELETE /kv with group
// commit off (the default, --write-batch 1) and on. Concurrent PUTs show
// which one runs: with it off every write is its own Raft entry; with it
// on some share one (a single shared entry is enough, so this does not
// depend on how the machine schedules the clients).
func TestWriteBatchServes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		batched bool
	}{
		{"default", nil, false},
		{"on", []string{"--write-batch", "256"}, true},
		{"max", []string{"--write-batch", "1024"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startSingle(t, tc.args...)
			mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/a"), []byte("1"))
			if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/a"), nil); string(got) != "1" {
				t.Fatalf("GET a = %q, want 1", got)
			}
			mustDo(t, http.StatusNoContent, "DELETE", n.url("/kv/a"), nil)
			mustDo(t, http.StatusNotFound, "GET", n.url("/kv/a"), nil)
			mustDo(t, http.StatusNoContent, "DELETE", n.url("/kv/a"), nil)
			// A bad write is refused alone, as without batching.
			mustDo(t, http.StatusRequestEntityTooLarge, "PUT", n.url("/kv/big"), make([]byte, 1<<20+1))

			const clients, perClient = 32, 20
			before := n.status().AppliedIndex
			var wg sync.WaitGroup
			errc := make(chan error, clients)
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func(c int) {
					defer wg.Done()
					for i := 0; i < perClient; i++ {
						k := fmt.Sprintf("c%02d-%02d", c, i)
						req, err := http.NewRequest("PUT", n.url("/kv/"+k), strings.NewReader(k))
						if err != nil {
							errc <- err
							return
						}
						resp, err := httpc.Do(req)
						if err != nil {
							errc <- err
							return
						}
						resp.Body.Close()
						if resp.StatusCode != http.StatusNoContent {
							errc <- fmt.Errorf("PUT %s: status %d", k, resp.StatusCode)
							return
						}
					}
				}(c)
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			for c := 0; c < clients; c++ {
				for i := 0; i < perClient; i += 7 {
					k := fmt.Sprintf("c%02d-%02d", c, i)
					if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/"+k), nil); string(got) != k {
						t.Fatalf("GET %s = %q", k, got)
					}
				}
			}
			st := n.status()
			entries := st.AppliedIndex - before
			t.Logf("%d PUTs in %d Raft entries", clients*perClient, entries)
			if st.Keys != clients*perClient {
				t.Fatalf("%d keys, want %d", st.Keys, clients*perClient)
			}
			if tc.batched && entries >= clients*perClient {
				t.Fatalf("%d concurrent PUTs took %d Raft entries: not batched", clients*perClient, entries)
			}
			if !tc.batched && entries < clients*perClient {
				t.Fatalf("%d PUTs took only %d Raft entries without group commit", clients*perClient, entries)
			}
		})
	}
}
