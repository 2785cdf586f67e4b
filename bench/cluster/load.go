//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: 1 µs to 60 s at 3 significant digits.
const (
	histMin = 1
	histMax = 60_000_000
)

// maxAttempts bounds retries of one put (503 while a leader is elected,
// a connection reset while a replica restarts).
const maxAttempts = 20

// load is one run of K concurrent writers. It stops after N puts, after
// Limit, or when Stop is closed, whichever comes first.
type load struct {
	K         int
	N         int64         // puts to issue
	Limit     time.Duration // wall-clock bound
	Prefix    byte          // first byte of every key; runs use distinct prefixes
	ValueSize int
	// Txn sends the puts as POST /txn without conditions, Batch (at
	// least 1) per request; latency is then the request's, counted once
	// per key. keeld's group commit does not merge txns, so each request
	// is one Raft entry: leaveBehind relies on that to grow the log.
	Txn   bool
	Batch int
	Stop  <-chan struct{} // optional
	// Rate, when positive, paces the puts: put i starts no earlier than
	// i/Rate seconds after the load began, so runs of two keeld builds
	// see the same arrivals (and so similar Raft batching) and their CPU
	// per put compares the code, not the machine's load at the time.
	Rate float64
}

// loadResult is what a load measured. Latency is from a put's first
// attempt to its success.
type loadResult struct {
	Ops    int64 `json:"ops"`
	Errors int64 `json:"errors"`
	Failed int64 `json:"failed"` // puts that used up maxAttempts
	// ErrorKinds counts failed attempts by HTTP status ("503") or
	// "transport" (no answer: connection refused or reset, timeout).
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	Seconds    float64          `json:"seconds"`
	OpsPerSec  float64          `json:"ops_per_sec"`
	MBPerSec   float64          `json:"user_mb_per_sec"`
	Latency    latency          `json:"latency_ms"`

	hist *hdrhistogram.Histogram
}

// latency holds percentiles in milliseconds.
type latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func latencyOf(h *hdrhistogram.Histogram) latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return latency{
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)),
		Max: ms(h.Max()), Mean: h.Mean() / 1000,
	}
}

// key is the i-th 16-byte key of a run: the prefix byte and 15 digits.
func key(prefix byte, i int64) string { return fmt.Sprintf("%c%015d", prefix, i) }

// appendKey appends key(prefix, i) to b without fmt.
func appendKey(b []byte, prefix byte, i int64) []byte {
	b = append(b, prefix)
	var d [15]byte
	for j := 14; j >= 0; j-- {
		d[j] = byte('0' + i%10)
		i /= 10
	}
	return append(b, d[:]...)
}

// rawPut is put over a rawConn.
func rawPut(c *rawConn, path string, v []byte) (int, error) {
	code, err := c.do("PUT", path, "", v)
	if err == nil && code != 204 {
		err = fmt.Errorf("%w: PUT %d", errHTTP, code)
	}
	return code, err
}

// rawTxn is postTxn over a rawConn.
func rawTxn(c *rawConn, body []byte) (int, error) {
	code, err := c.do("POST", "/txn", "application/json", body)
	if err == nil && (code != 200 || !bytes.Contains(c.body, []byte(`"succeeded":true`))) {
		err = fmt.Errorf("%w: POST /txn %d", errHTTP, code)
	}
	return code, err
}

// run drives targets with l's writers: writer w sends to targets[w %
// len(targets)] (round-robin over the members, or all to one replica).
// Values are random bytes, fresh for every put, so Pebble cannot compress
// them away. Writers use rawConn unless the fleet was told to use
// net/http (-client std).
func (l load) run(ctx context.Context, f *fleet, targets ...*replica) loadResult {
	var next, errs, failed atomic.Int64
	hists := make([]*hdrhistogram.Histogram, l.K)
	kinds := make([]map[string]int64, l.K)
	deadline := time.Now().Add(l.Limit)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < l.K; w++ {
		hists[w] = hdrhistogram.New(histMin, histMax, 3)
		kinds[w] = map[string]int64{}
		target := targets[w%len(targets)]
		var rc *rawConn
		if !f.stdClient {
			rc = newRawConn(target.httpAddr, 30*time.Second)
		}
		wg.Add(1)
		go func(h *hdrhistogram.Histogram, kind map[string]int64, seed uint64) {
			defer wg.Done()
			if rc != nil {
				defer rc.close()
			}
			rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
			val := make([]byte, l.ValueSize)
			path := make([]byte, 0, 64)
			batch := int64(1)
			if l.Txn {
				batch = int64(max(l.Batch, 1))
			}
			for {
				i := next.Add(batch) - batch
				if i >= l.N || time.Now().After(deadline) || ctx.Err() != nil || closed(l.Stop) {
					return
				}
				n := min(batch, l.N-i)
				if l.Rate > 0 {
					if d := time.Until(start.Add(time.Duration(float64(i) / l.Rate * float64(time.Second)))); d > 0 {
						sleep(ctx, d)
					}
				}
				var body []byte
				if !l.Txn {
					randomBytes(rng, val)
					path = appendKey(append(path[:0], "/kv/"...), l.Prefix, i)
				} else {
					body = txnBody(rng, l.Prefix, i, n, l.ValueSize)
				}
				t0 := time.Now()
				ok := false
				for a := 0; a < maxAttempts && !ok && ctx.Err() == nil && time.Now().Before(deadline); a++ {
					if a > 0 {
						sleep(ctx, time.Duration(a)*20*time.Millisecond)
					}
					var code int
					var err error
					switch {
					case rc != nil && !l.Txn:
						code, err = rawPut(rc, string(path), val)
					case rc != nil:
						code, err = rawTxn(rc, body)
					case !l.Txn:
						code, err = put(ctx, f.hc, target, key(l.Prefix, i), val)
					default:
						code, err = postTxn(ctx, f.hc, target, body)
					}
					ok = err == nil
					if !ok {
						errs.Add(1)
						if code == 0 {
							kind["transport"]++
						} else {
							kind[fmt.Sprint(code)]++
						}
					}
				}
				if !ok {
					failed.Add(1)
					continue
				}
				us := time.Since(t0).Microseconds()
				_ = h.RecordValues(min(max(us, histMin), histMax), n)
			}
		}(hists[w], kinds[w], uint64(w)+uint64(l.Prefix)<<32)
	}
	wg.Wait()
	el := time.Since(start)
	h := hdrhistogram.New(histMin, histMax, 3)
	for _, x := range hists {
		h.Merge(x)
	}
	res := loadResult{Ops: h.TotalCount(), Errors: errs.Load(), Failed: failed.Load(),
		Seconds: el.Seconds(), Latency: latencyOf(h), hist: h}
	for _, m := range kinds {
		for k, v := range m {
			if res.ErrorKinds == nil {
				res.ErrorKinds = map[string]int64{}
			}
			res.ErrorKinds[k] += v
		}
	}
	if el > 0 {
		res.OpsPerSec = float64(res.Ops) / el.Seconds()
		res.MBPerSec = res.OpsPerSec * float64(l.ValueSize+16) / 1e6
	}
	return res
}

// randomBytes fills b from rng.
func randomBytes(rng *rand.Rand, b []byte) {
	for j := 0; j+8 <= len(b); j += 8 {
		v := rng.Uint64()
		for k := 0; k < 8; k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
}

// txnBody is a POST /txn body putting keys i..i+n-1. JSON strings must be
// UTF-8, so values are hex of random bytes (still incompressible to
// Snappy, which has no entropy coder).
func txnBody(rng *rand.Rand, prefix byte, i, n int64, valueSize int) []byte {
	raw := make([]byte, (valueSize+1)/2)
	var b bytes.Buffer
	b.WriteString(`{"then":[`)
	for j := int64(0); j < n; j++ {
		if j > 0 {
			b.WriteByte(',')
		}
		randomBytes(rng, raw)
		fmt.Fprintf(&b, `{"put":%q,"value":"%s"}`, key(prefix, i+j), hex.EncodeToString(raw)[:valueSize])
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// postTxn sends a txn body; nil only on 200 with "succeeded": true.
func postTxn(ctx context.Context, hc *http.Client, r *replica, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url("/txn"), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	var out struct {
		Succeeded bool `json:"succeeded"`
	}
	derr := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || derr != nil || !out.Succeeded {
		return resp.StatusCode, fmt.Errorf("%w: POST /txn %d", errHTTP, resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// put writes one key; nil only on 204. The status is 0 when there was no
// answer.
func put(ctx context.Context, hc *http.Client, r *replica, k string, v []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, r.url("/kv/"+k), bytes.NewReader(v))
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	// Drain so the connection goes back to the idle pool.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return resp.StatusCode, fmt.Errorf("%w: PUT %d", errHTTP, resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// get does a linearizable read of k; nil on 200 or 404 (both are answers).
func get(ctx context.Context, hc *http.Client, r *replica, k string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url("/kv/"+k), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 2<<20))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("%w: GET %d", errHTTP, resp.StatusCode)
	}
	return nil
}

func closed(c <-chan struct{}) bool {
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
