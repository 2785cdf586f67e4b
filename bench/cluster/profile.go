//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/keel-db/keel/bench/internal/loopback"
)

// profiler takes CPU profiles of a cluster's keeld processes while a load
// runs. Start begins one profile per running replica (GET
// /debug/pprof/profile on its KEEL_PPROF listener) and returns a func that
// waits for them; each lands in <dir>/<name>-r<id>.pprof, for
// `go tool pprof bin/keeld FILE`. A nil profiler does nothing.
type profiler struct {
	dir, name string
	seconds   int
}

// profiler returns the write run's profiler, nil unless -profile is set.
func (o options) profiler(name string) *profiler {
	if o.Profile <= 0 {
		return nil
	}
	return &profiler{dir: filepath.Join(o.Out, "profiles"), name: name, seconds: max(1, int(o.Profile.Seconds()))}
}

// named returns a profiler writing under another phase name.
func (p *profiler) named(name string) *profiler {
	if p == nil {
		return nil
	}
	q := *p
	q.name = name
	return &q
}

func (p *profiler) start(ctx context.Context, c *cluster) (wait func()) {
	if p == nil {
		return func() {}
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		logf("profile: %v", err)
		return func() {}
	}
	var wg sync.WaitGroup
	for _, r := range c.reps {
		if !r.alive() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			file := filepath.Join(p.dir, fmt.Sprintf("%s-r%d.pprof", p.name, r.id))
			if err := fetchProfile(ctx, r.pprofAddr, p.seconds, file); err != nil {
				logf("profile of replica %d: %v", r.id, err)
			}
		}()
	}
	return wg.Wait
}

// fetchProfile writes a CPU profile of the keeld listening on addr.
func fetchProfile(ctx context.Context, addr string, seconds int, file string) error {
	return loopback.FetchToFile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds), file)
}
