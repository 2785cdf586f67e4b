//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
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
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// Its own client: the fleet's has a 30 s timeout and keeps K
	// connections for the load.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s: %d", errHTTP, url, resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
