package logcompact

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/logcompact"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// sample is one point of a series.
type sample struct {
	Seconds float64 `json:"seconds"`
	Writes  int64   `json:"writes"`
	Bytes   int64   `json:"bytes"`
}

type series struct {
	Mode      string   `json:"mode"`
	Writes    int      `json:"writes"`
	ValueSize int      `json:"value_size"`
	PeakBytes int64    `json:"peak_bytes"`
	EndBytes  int64    `json:"end_bytes"`
	Samples   []sample `json:"samples"`
}

var (
	resultsMu sync.Mutex // guards results
	results   = map[string]series{}
)

func BenchmarkLogDisk(b *testing.B) {
	for _, on := range []bool{true, false} {
		mode := map[bool]string{true: "compaction=on", false: "compaction=off"}[on]
		b.Run(mode, func(b *testing.B) { runLogDisk(b, mode, on) })
	}
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	out := filepath.Join("..", "results", "logcompact.json")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		b.Fatal(err)
	}
	data, err := json.MarshalIndent(results, "", " ")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(out, data, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := drawLogDisk(results, filepath.Join("..", "results", "logcompact.png")); err != nil {
		b.Fatal(err)
	}
}

// drawLogDisk charts the Raft log's allocated MiB against writes done, one
// line per mode.
func drawLogDisk(results map[string]series, out string) error {
	p := plot.New()
	p.Title.Text = "Raft log allocated bytes per replica (max over replicas)"
	p.X.Label.Text = "writes"
	p.Y.Label.Text = "MiB"
	var args []interface{}
	for _, mode := range []string{"compaction=on", "compaction=off"} {
		s, ok := results[mode]
		if !ok {
			continue
		}
		xy := make(plotter.XYs, len(s.Samples))
		for i, sm := range s.Samples {
			xy[i].X, xy[i].Y = float64(sm.Writes), float64(sm.Bytes)/(1<<20)
		}
		args = append(args, mode, xy)
	}
	if err := plotutil.AddLines(p, args...); err != nil {
		return err
	}
	p.Y.Min = 0
	p.Legend.Top = true
	return p.Save(10*vg.Inch, 5*vg.Inch, out)
}

func runLogDisk(b *testing.B, mode string, on bool) {
	const valueSize, workers = 256, 128
	c := testcluster.New(b, 3, testcluster.Options{Shard: logcompact.Configure})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	if on {
		for _, n := range c.Running() {
			comp, err := logcompact.New(logcompact.Config{NodeHost: n.NH, ShardID: c.ShardID,
				ReplicaID: n.ReplicaID, Dirs: []string{filepath.Join(n.Dir, "raft")}})
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() { defer wg.Done(); _ = comp.Run(ctx) }()
		}
	}
	s := series{Mode: mode, Writes: b.N, ValueSize: valueSize}
	var written atomic.Int64
	start := time.Now()
	measure := func() {
		var most int64
		for _, n := range c.Running() {
			v, err := logcompact.AllocatedBytes(filepath.Join(n.Dir, "raft"))
			if err == nil && v > most {
				most = v
			}
		}
		s.Samples = append(s.Samples, sample{time.Since(start).Seconds(), written.Load(), most})
		if most > s.PeakBytes {
			s.PeakBytes = most
		}
		s.EndBytes = most
	}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			measure()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	val := make([]byte, valueSize)
	client := c.Leader().Client
	var next atomic.Int64
	var failed atomic.Value
	b.SetBytes(valueSize)
	b.ResetTimer()
	var ww sync.WaitGroup
	for w := 0; w < workers; w++ {
		ww.Add(1)
		go func() {
			defer ww.Done()
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				key := []byte(fmt.Sprintf("k%09d", i))
				if err := testcluster.Retry(ctx, func(ctx context.Context) error { return client.Put(ctx, key, val) }); err != nil {
					failed.Store(err)
					return
				}
				written.Add(1)
			}
		}()
	}
	ww.Wait()
	b.StopTimer()
	close(stop)
	<-sampled
	measure()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(s.PeakBytes)/(1<<20), "peak-MiB")
	b.ReportMetric(float64(s.EndBytes)/(1<<20), "end-MiB")
	resultsMu.Lock()
	results[mode] = s
	resultsMu.Unlock()
}
