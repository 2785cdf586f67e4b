package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Workload shape. Few keys so operations contend (numKeys, spread over
// the shards: cluster.keys); unique values so every read names the write
// it saw.
const (
	numKeys      = 8
	numWorkers   = 5
	clientTimout = 10 * time.Second // above keeld's 5 s request deadline
	ackPrefix    = "ack/"
)

func isAckKey(k string) bool { return strings.HasPrefix(k, ackPrefix) }

// history is the shared, append-only list of finished operations.
type history struct {
	start time.Time
	// mu guards recs and nextClient.
	mu         sync.Mutex
	recs       []*record
	nextClient int
}

func (h *history) now() int64 { return time.Since(h.start).Nanoseconds() }

func (h *history) add(r *record) {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
}

// newClientID returns a fresh porcupine client ID. A worker takes a new one
// after an unknown operation, whose interval never ends.
func (h *history) newClientID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextClient++
	return h.nextClient - 1
}

func (h *history) snapshot() []*record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*record(nil), h.recs...)
}

// worker is one client goroutine.
type worker struct {
	id     int
	rng    *rand.Rand
	c      *cluster
	h      *history
	hc     *http.Client
	client int
	seq    int
	// seen is the last value this worker observed or wrote per key, the
	// expected value of its compare-and-set txns.
	seen map[string]string
}

func newWorker(id int, seed uint64, c *cluster, h *history) *worker {
	return &worker{
		id: id, rng: rand.New(rand.NewPCG(seed, uint64(id))), c: c, h: h,
		hc: &http.Client{Timeout: clientTimout, Transport: &http.Transport{
			MaxIdleConnsPerHost: 2, DisableCompression: true,
		}},
		client: h.newClientID(),
		seen:   map[string]string{},
	}
}

// run issues operations until ctx is done.
func (w *worker) run(ctx context.Context, ops *atomic.Int64) {
	for ctx.Err() == nil {
		r := w.next()
		w.do(r, nil)
		ops.Add(1)
		if r.Outcome == outcomeUnknown {
			w.client = w.h.newClientID()
		}
		// Leave CPU to the replicas on a small shared machine.
		time.Sleep(time.Duration(w.rng.IntN(3)) * time.Millisecond)
	}
}

// next draws an operation.
func (w *worker) next() *record {
	w.seq++
	val := fmt.Sprintf("w%d-%d", w.id, w.seq)
	key := w.c.keys[w.rng.IntN(len(w.c.keys))]
	r := &record{Client: w.client, Key: key}
	switch p := w.rng.IntN(100); {
	case p < 30:
		r.Kind = opGet
	case p < 55:
		r.Kind, r.Value = opPut, val
	case p < 62:
		r.Kind = opDelete
	case p < 80:
		r.Kind, r.Cond, r.Value = opTxn, condEquals, val
		r.CondValue = w.seen[key]
		if r.CondValue == "" {
			r.Cond = condAbsent
		}
	case p < 85:
		r.Kind, r.Cond, r.Value = opTxn, condAbsent, val
	case p < 90:
		r.Kind, r.Cond, r.TxnDelete = opTxn, condExists, true
	default:
		r.Kind, r.Key, r.Value = opPut, fmt.Sprintf("%sw%d/%d", ackPrefix, w.id, w.seq), val
	}
	return r
}

// pickTarget chooses a replica that is not known to be down. Paused ones
// stay eligible: a request to a stopped process is a real client's fate.
func (w *worker) pickTarget() *replica {
	rs := w.c.replicas
	start := w.rng.IntN(len(rs))
	for i := range rs {
		r := rs[(start+i)%len(rs)]
		if r.getState() != stateDown {
			return r
		}
	}
	return rs[start]
}

type txnJSON struct {
	If   []map[string]any `json:"if"`
	Then []map[string]any `json:"then"`
}

// do sends r's request to target (a random live replica when nil) and
// fills in its result.
func (w *worker) do(r *record, target *replica) {
	if target == nil {
		target = w.pickTarget()
	}
	r.Target = target.id
	var method, path string
	var body []byte
	esc := url.PathEscape(r.Key)
	switch r.Kind {
	case opGet:
		method, path = http.MethodGet, "/kv/"+esc
	case opPut:
		method, path, body = http.MethodPut, "/kv/"+esc, []byte(r.Value)
	case opDelete:
		method, path = http.MethodDelete, "/kv/"+esc
	case opTxn:
		cond := map[string]any{"key": r.Key}
		switch r.Cond {
		case condEquals:
			cond["equals"] = r.CondValue
		case condAbsent:
			cond["absent"] = true
		case condExists:
			cond["exists"] = true
		}
		then := map[string]any{"put": r.Key, "value": r.Value}
		if r.TxnDelete {
			then = map[string]any{"delete": r.Key}
		}
		body, _ = json.Marshal(txnJSON{If: []map[string]any{cond}, Then: []map[string]any{then}})
		method, path = http.MethodPost, "/txn"
	}
	req, _ := http.NewRequest(method, target.url(path), bytes.NewReader(body))
	r.Call = w.h.now()
	resp, err := w.hc.Do(req)
	var respBody []byte
	if err == nil {
		respBody, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	r.Return = w.h.now()
	defer w.h.add(r)
	if err != nil {
		r.Detail = err.Error()
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			r.Outcome = outcomeFailed // never reached a server
		case r.Kind == opGet:
			r.Outcome = outcomeFailed
		default:
			r.Outcome = outcomeUnknown
		}
		return
	}
	code := resp.StatusCode
	switch {
	case r.Kind == opGet && code == http.StatusOK:
		r.Outcome, r.Found, r.Got = outcomeOK, true, string(respBody)
		w.seen[r.Key] = r.Got
	case r.Kind == opGet && code == http.StatusNotFound:
		r.Outcome = outcomeOK
		delete(w.seen, r.Key)
	case (r.Kind == opPut || r.Kind == opDelete) && code == http.StatusNoContent:
		r.Outcome = outcomeOK
		if r.Kind == opPut {
			w.seen[r.Key] = r.Value
		}
	case r.Kind == opTxn && code == http.StatusOK:
		var tr struct {
			Succeeded bool `json:"succeeded"`
		}
		if jerr := json.Unmarshal(respBody, &tr); jerr != nil {
			r.Outcome, r.Detail = outcomeUnknown, fmt.Sprintf("undecodable txn answer %q", respBody)
			return
		}
		r.Outcome, r.Succeeded = outcomeOK, tr.Succeeded
		switch {
		case tr.Succeeded && r.TxnDelete:
			delete(w.seen, r.Key)
		case tr.Succeeded:
			w.seen[r.Key] = r.Value
		}
	case code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge || code == http.StatusNotFound || code == http.StatusMethodNotAllowed:
		// The workload only sends valid requests: a 4xx is a server bug.
		r.Outcome, r.Detail = outcomeFailed, fmt.Sprintf("BUG %d %s", code, respBody)
	default:
		// 503 (no leader, timeout, busy) and 5xx: a write may have been
		// applied, a read tells nothing.
		r.Detail = fmt.Sprintf("%d %s", code, bytes.TrimSpace(respBody))
		if r.Kind == opGet {
			r.Outcome = outcomeFailed
		} else {
			r.Outcome = outcomeUnknown
		}
	}
}
