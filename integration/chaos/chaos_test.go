package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/keel-db/keel/internal/testkit/proctest"
)

// summary is the run's JSON report (summary.json, and the test log).
type summary struct {
	Seed               uint64             `json:"seed"`
	Duration           string             `json:"duration"`
	KeeldFlags         []string           `json:"keeld_flags"`
	Shards             int                `json:"shards"`
	Operations         opCounts           `json:"operations"`
	Faults             map[string]int     `json:"faults"`
	FaultsTotal        int                `json:"faults_total"`
	SnapshotsSent      float64            `json:"snapshots_sent"`
	SnapshotsInstalled float64            `json:"snapshots_installed"`
	Compactions        float64            `json:"compactions"`
	CompactionsSeen    int                `json:"log_first_index_advances"`
	StatusCounters     map[string]float64 `json:"status_counters"`
	AckedAckWrites     int                `json:"acked_ack_writes"`
	// FinalAppliedIndex and StateHash are shard 1's; ShardStates every
	// shard's (the same on every replica when the run passes).
	FinalAppliedIndex uint64     `json:"final_applied_index"`
	StateHash         string     `json:"state_hash"`
	ShardStates       []shardEnd `json:"shard_states"`
	Linearizable      string     `json:"linearizable"`
	CheckSeconds      float64    `json:"porcupine_seconds"`
	Problems          []string   `json:"problems"`
	Verdict           string     `json:"verdict"`
}

// shardEnd is one shard's state at the end of a run (the first replica's).
type shardEnd struct {
	Shard        int    `json:"shard"`
	AppliedIndex uint64 `json:"applied_index"`
	Keys         uint64 `json:"keys"`
	StateHash    string `json:"state_hash"`
}

type opCounts struct {
	Total   int            `json:"total"`
	OK      int            `json:"ok"`
	Unknown int            `json:"unknown"`
	Failed  int            `json:"failed"`
	ByKind  map[string]int `json:"by_kind"`
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// keeldFlags returns the flags that keep snapshots and log compactions
// frequent, for the ones this keeld has: whether it snapshots often, and
// whether its log window is short enough that a paused follower falls
// behind it and needs a snapshot stream.
func keeldFlags(t *testing.T) (flags []string, snapshots, streams bool) {
	out, _ := exec.Command(keeldBin, "-h").CombinedOutput()
	help := string(out)
	if strings.Contains(help, "-snapshot-entries") {
		flags = append(flags, "--snapshot-entries", "500")
		snapshots = true
	}
	if strings.Contains(help, "-snapshot-interval") {
		flags = append(flags, "--snapshot-interval", "2s")
		snapshots = true
	}
	if strings.Contains(help, "-log-keep-entries") {
		flags = append(flags, "--log-keep-entries", "100")
		streams = true
	}
	return flags, snapshots, streams
}

func TestChaos(t *testing.T) {
	dur := envDuration(t, "CHAOS_DURATION", 90*time.Second)
	seed := rand.Uint64()
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	shards := envShards(t)
	t.Logf("chaos: seed %d (reproduce with SEED=%d or CHAOS_SEED=%d), duration %v, %d shards", seed, seed, seed, dur, shards)

	outDir := os.Getenv("CHAOS_OUT")
	keepOut := outDir != ""
	if outDir == "" {
		var err error
		if outDir, err = os.MkdirTemp("", "keel-chaos-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || keepOut {
			t.Logf("chaos: history, logs and summary kept in %s", outDir)
			return
		}
		os.RemoveAll(outDir)
	})
	dataRoot := t.TempDir()

	flags, snapshots, streams := keeldFlags(t)
	c := newCluster(t, dataRoot, outDir, shards, flags)
	faultLog, err := os.Create(filepath.Join(outDir, "faults.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer faultLog.Close()

	h := &history{start: time.Now()}
	mon := newMonitor(c)
	nem := &nemesis{c: c, rng: rand.New(rand.NewPCG(seed, 0x6e656d)), log: faultLog, mon: mon,
		snapshots: snapshots, streams: streams, counts: map[string]int{},
		filler: newWorker(numWorkers, seed, c, h)}

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	monCtx, monCancel := context.WithCancel(context.Background())
	var monWG sync.WaitGroup
	monWG.Add(1)
	go func() { defer monWG.Done(); mon.run(monCtx) }()

	var ops atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < numWorkers; i++ {
		w := newWorker(i, seed, c, h)
		wg.Add(1)
		go func() { defer wg.Done(); w.run(ctx, &ops) }()
	}
	nemErr := make(chan error, 1)
	go func() { nemErr <- nem.run(ctx) }()
	// Progress, so a long run shows it is alive.
	go func() {
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				t.Logf("chaos: %d ops, %d faults", ops.Load(), nem.total())
			}
		}
	}()
	if err := <-nemErr; err != nil {
		cancel()
		wg.Wait()
		t.Fatalf("nemesis: %v", err)
	}
	wg.Wait()

	sum := summary{Seed: seed, Duration: dur.String(), KeeldFlags: flags, Shards: shards, Problems: []string{}}
	problem := func(format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		sum.Problems = append(sum.Problems, msg)
		t.Error(msg)
	}

	// Heal: every replica running, caught up to the same applied index.
	for _, r := range c.replicas {
		if r.getState() == stateDown {
			if err := nem.restart(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One last acknowledged write to every shard, so each log ends in a
	// command rather than a new leader's no-op entry. Dragonboat does not
	// pass no-ops to Update, so a snapshot taken at a no-op has an index
	// above Keel's applied index.
	for s := 1; s <= c.shards; s++ {
		if err := finalWrite(c, keyInShard("chaos/end/%d", s, c.shards)); err != nil {
			problem("final write to shard %d: %v", s, err)
		}
	}
	if err = proctest.Poll(120*time.Second, c.converged); err != nil {
		problem("replicas did not converge: %v", err)
	}
	mon.sample()
	monCancel()
	monWG.Wait()
	for _, r := range c.replicas {
		for _, msg := range r.crashes() {
			problem("%s (see replica-%d.log in %s)", msg, r.id, outDir)
		}
	}

	// Final linearizable reads of every key from every replica join the
	// history: they pin the final state the check must explain.
	fc := &http.Client{Timeout: clientTimout}
	for _, r := range c.replicas {
		for _, key := range c.keys {
			rec := &record{Client: h.newClientID(), Kind: opGet, Key: key, Target: r.id, Call: h.now()}
			resp, err := fc.Get(r.url("/kv/" + key))
			if err != nil {
				problem("final read %s on replica %d: %v", key, r.id, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			rec.Return = h.now()
			switch resp.StatusCode {
			case http.StatusOK:
				rec.Outcome, rec.Found, rec.Got = outcomeOK, true, string(b)
			case http.StatusNotFound:
				rec.Outcome = outcomeOK
			default:
				problem("final read %s on replica %d: %d %s", key, r.id, resp.StatusCode, b)
				continue
			}
			h.add(rec)
		}
	}
	recs := h.snapshot()

	// Durability: every acknowledged ack/ write on every replica.
	acked := map[string]string{}
	maybe := map[string]string{}
	for _, r := range recs {
		if !isAckKey(r.Key) {
			continue
		}
		switch r.Outcome {
		case outcomeOK:
			acked[r.Key] = r.Value
		case outcomeUnknown:
			maybe[r.Key] = r.Value
		}
	}
	sum.AckedAckWrites = len(acked)
	for _, r := range c.replicas {
		got, err := scanAll(fc, r, ackPrefix)
		if err != nil {
			problem("scan ack/ on replica %d: %v", r.id, err)
			continue
		}
		lost := 0
		for k, v := range acked {
			if got[k] != v {
				lost++
				if lost <= 5 {
					problem("replica %d: acknowledged write %s=%s is %q", r.id, k, v, got[k])
				}
			}
		}
		if lost > 0 {
			problem("replica %d lost %d of %d acknowledged writes", r.id, lost, len(acked))
		}
		for k, v := range got {
			if acked[k] != v && maybe[k] != v {
				problem("replica %d holds %s=%s, which no client wrote", r.id, k, v)
			}
		}
	}

	for _, r := range c.stopOrder() {
		if err := r.stop(); err != nil {
			problem("%v", err)
		}
	}
	// Convergence and consistency offline, with keelctl, shard by shard:
	// every replica of a shard at the same applied index with the same
	// StateHash and key count, and `keelctl check` clean.
	byShard := c.shardHashes(problem)
	for _, err := range compareShardHashes(byShard, c.shards, len(c.replicas)) {
		problem("%v", err)
	}
	for s := 1; s <= c.shards; s++ {
		for id := 1; id <= len(c.replicas); id++ {
			if h, ok := byShard[s][id]; ok {
				t.Logf("shard %d replica %d: applied index %d, %d keys, hash %v", s, id, h.AppliedIndex, h.Keys, h.Hash)
			}
		}
		for id := 1; id <= len(c.replicas); id++ {
			if h, ok := byShard[s][id]; ok {
				sum.ShardStates = append(sum.ShardStates, shardEnd{Shard: s, AppliedIndex: h.AppliedIndex, Keys: h.Keys, StateHash: fmt.Sprint(h.Hash)})
				break
			}
		}
	}
	if len(sum.ShardStates) > 0 && sum.ShardStates[0].Shard == 1 {
		sum.FinalAppliedIndex, sum.StateHash = sum.ShardStates[0].AppliedIndex, sum.ShardStates[0].StateHash
	}

	// Linearizability.
	if err := writeHistory(filepath.Join(outDir, "history.jsonl"), recs); err != nil {
		t.Error(err)
	}
	checkTimeout := envDuration(t, "CHAOS_CHECK_TIMEOUT", 5*time.Minute)
	began := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, operations(recs), checkTimeout)
	sum.CheckSeconds = time.Since(began).Seconds()
	switch res {
	case porcupine.Ok:
		sum.Linearizable = "ok"
	case porcupine.Illegal:
		sum.Linearizable = "illegal"
		html := filepath.Join(outDir, "linearizability.html")
		if err := porcupine.VisualizePath(kvModel, info, html); err != nil {
			t.Errorf("writing visualisation: %v", err)
		}
		problem("history is not linearizable; see %s", html)
	default:
		sum.Linearizable = "unknown"
		problem("linearizability check timed out after %v", checkTimeout)
	}

	// Report.
	sum.Operations.ByKind = map[string]int{}
	for _, r := range recs {
		sum.Operations.Total++
		sum.Operations.ByKind[string(r.Kind)]++
		switch r.Outcome {
		case outcomeOK:
			sum.Operations.OK++
		case outcomeUnknown:
			sum.Operations.Unknown++
		default:
			sum.Operations.Failed++
		}
		if strings.HasPrefix(r.Detail, "BUG") {
			problem("client %d %s %s: %s", r.Client, r.Kind, r.Key, r.Detail)
		}
	}
	sum.Faults = nem.countsCopy()
	sum.FaultsTotal = nem.total()
	counters, seen := mon.counters()
	sum.StatusCounters, sum.CompactionsSeen = counters, seen
	// keeld's /status: snapshots.saved counts SaveSnapshot runs (streams
	// to followers; exports are not used here), snapshots.received images
	// installed, raft_log.compactions the compactor's log compactions.
	sum.SnapshotsSent = counters["snapshots.saved"]
	sum.SnapshotsInstalled = counters["snapshots.received"]
	sum.Compactions = counters["raft_log.compactions"]
	sum.Verdict = "pass"
	if len(sum.Problems) > 0 || t.Failed() {
		sum.Verdict = "fail"
	}
	b, _ := json.MarshalIndent(sum, "", "  ")
	_ = os.WriteFile(filepath.Join(outDir, "summary.json"), append(b, '\n'), 0o644)
	t.Logf("chaos summary:\n%s", b)
}

// scanAll reads every key under prefix from r (stale reads: the replica's
// own state), following pages.
func scanAll(hc *http.Client, r *replica, prefix string) (map[string]string, error) {
	out := map[string]string{}
	start := ""
	for {
		q := url.Values{"prefix": {prefix}, "stale": {"true"}, "limit": {"1000"}}
		if start != "" {
			q.Set("start", start)
		}
		resp, err := hc.Get(r.url("/kv?" + q.Encode()))
		if err != nil {
			return nil, err
		}
		var page struct {
			Pairs []struct {
				Key   string `json:"key"`
				Value string `json:"value"`
			} `json:"pairs"`
			More    bool   `json:"more"`
			NextKey string `json:"next_key"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("scan: status %d", resp.StatusCode)
		}
		for _, p := range page.Pairs {
			out[p.Key] = p.Value
		}
		if !page.More {
			return out, nil
		}
		start = page.NextKey
	}
}

func writeHistory(path string, recs []*record) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// finalWrite puts key through any replica, retrying on 503 until a
// deadline: the shard has healed, so it must be accepted.
func finalWrite(c *cluster, key string) error {
	hc := &http.Client{Timeout: clientTimout}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		for _, r := range c.replicas {
			req, _ := http.NewRequest(http.MethodPut, r.url("/kv/"+url.PathEscape(key)), strings.NewReader("end"))
			resp, rerr := hc.Do(req)
			if rerr != nil {
				err = rerr
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
			err = fmt.Errorf("replica %d: status %d", r.id, resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond) // retry interval
	}
}
