//go:build linux

package main

import (
	"context"
	"path/filepath"
	"sync"
	"time"
)

// sample is one replica's disk and memory at one moment.
type sample struct {
	Seconds   float64 `json:"seconds"` // since the benchmark started
	Phase     string  `json:"phase"`
	Cluster   string  `json:"cluster"`
	Replica   uint64  `json:"replica"`
	RaftBytes uint64  `json:"raft_bytes"` // allocated under DIR/raft, snapshot staging excluded
	// RaftSnapBytes is under DIR/raft's snapshot-part-* directories: a
	// received snapshot stream buffered before install.
	RaftSnapBytes uint64 `json:"raft_snapshot_bytes"`
	SMBytes       uint64 `json:"sm_bytes"` // allocated under DIR/sm
	RSSBytes      uint64 `json:"rss_bytes"`
	HWMBytes      uint64 `json:"hwm_bytes"` // VmHWM: this process's peak RSS
}

// sampler records every running replica of the current cluster every
// interval until its context ends.
type sampler struct {
	start    time.Time
	interval time.Duration

	mu      sync.Mutex // guards cluster, phase and samples
	cluster *cluster
	phase   string
	samples []sample
}

func (s *sampler) set(c *cluster, phase string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cluster, s.phase = c, phase
}

func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.once()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// once takes one sample of each running replica. The directory walks run
// outside the lock.
func (s *sampler) once() {
	s.mu.Lock()
	c, phase := s.cluster, s.phase
	s.mu.Unlock()
	if c == nil {
		return
	}
	var out []sample
	for _, r := range c.reps {
		pid := r.pid()
		if !r.alive() || pid == 0 {
			continue
		}
		x := sample{Seconds: time.Since(s.start).Seconds(), Phase: phase, Cluster: c.name, Replica: r.id,
			SMBytes: allocatedBytes(filepath.Join(r.dir, "sm"))}
		x.RaftBytes, x.RaftSnapBytes = raftBytes(filepath.Join(r.dir, "raft"))
		x.RSSBytes, x.HWMBytes, _ = procMem(pid)
		out = append(out, x)
	}
	s.mu.Lock()
	s.samples = append(s.samples, out...)
	s.mu.Unlock()
}

func (s *sampler) all() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.samples...)
}

// diskMem summarises the samples: per replica and overall peaks, and the
// peaks within the given phases.
type diskMem struct {
	PeakRaftBytes      uint64            `json:"peak_raft_bytes_per_replica"`
	PeakRaftSnapBytes  uint64            `json:"peak_raft_snapshot_staging_bytes_per_replica"`
	PeakSMBytes        uint64            `json:"peak_sm_bytes_per_replica"`
	PeakRSSBytes       uint64            `json:"peak_rss_bytes_per_replica"`
	PeakRaftByPhase    map[string]uint64 `json:"peak_raft_bytes_by_phase"`
	PeakRSSByPhase     map[string]uint64 `json:"peak_rss_bytes_by_phase"`
	SampleIntervalSecs float64           `json:"sample_interval_seconds"`
	Samples            []sample          `json:"samples"`
}

func summarise(samples []sample, interval time.Duration) diskMem {
	d := diskMem{PeakRaftByPhase: map[string]uint64{}, PeakRSSByPhase: map[string]uint64{},
		SampleIntervalSecs: interval.Seconds(), Samples: samples}
	for _, x := range samples {
		d.PeakRaftBytes = max(d.PeakRaftBytes, x.RaftBytes)
		d.PeakRaftSnapBytes = max(d.PeakRaftSnapBytes, x.RaftSnapBytes)
		d.PeakSMBytes = max(d.PeakSMBytes, x.SMBytes)
		d.PeakRSSBytes = max(d.PeakRSSBytes, x.HWMBytes, x.RSSBytes)
		d.PeakRaftByPhase[x.Phase] = max(d.PeakRaftByPhase[x.Phase], x.RaftBytes)
		d.PeakRSSByPhase[x.Phase] = max(d.PeakRSSByPhase[x.Phase], x.HWMBytes, x.RSSBytes)
	}
	return d
}
