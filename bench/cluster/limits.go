//go:build linux

package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// limitsResult is what the machine can do on the replicas' filesystem.
type limitsResult struct {
	Dir                 string  `json:"dir"`
	FdatasyncAppendsSec float64 `json:"fdatasync_4k_appends_per_sec"`
	// FdatasyncP50US and FdatasyncP99US are the latency of one append +
	// fdatasync: a Raft write waits for a few of them in sequence (the
	// leader's log, a follower's log, the leader's commit record).
	FdatasyncP50US float64 `json:"fdatasync_p50_us"`
	FdatasyncP99US float64 `json:"fdatasync_p99_us"`
	SeqWriteMiBSec float64 `json:"seq_write_mib_per_sec"`
	SeqWriteBytes  int64   `json:"seq_write_bytes"`
	HardLinksSec   float64 `json:"hard_links_per_sec"`
}

// measureLimits runs the three probes in dir, each bounded by d (and by a
// count), and removes what it wrote.
func measureLimits(dir string, d time.Duration, seqBytes int64) (limitsResult, error) {
	res := limitsResult{Dir: dir}
	work := filepath.Join(dir, "limits")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return res, err
	}
	defer os.RemoveAll(work)
	var err error
	if res.FdatasyncAppendsSec, res.FdatasyncP50US, res.FdatasyncP99US, err = fdatasyncAppends(filepath.Join(work, "append"), d, 100_000); err != nil {
		return res, fmt.Errorf("fdatasync appends: %w", err)
	}
	if res.SeqWriteMiBSec, res.SeqWriteBytes, err = seqWrite(filepath.Join(work, "seq"), d, seqBytes); err != nil {
		return res, fmt.Errorf("sequential write: %w", err)
	}
	if res.HardLinksSec, err = hardLinks(work, d, 200_000); err != nil {
		return res, fmt.Errorf("hard links: %w", err)
	}
	return res, nil
}

// fdatasyncAppends appends 4 KiB blocks, each followed by fdatasync, as a
// write-ahead log does: the ceiling on durable commits per second for one
// writer that does not batch.
func fdatasyncAppends(path string, d time.Duration, maxOps int) (perSec, p50us, p99us float64, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	_, _ = rand.Read(buf)
	h := hdrhistogram.New(histMin, histMax, 3)
	start := time.Now()
	n := 0
	for ; n < maxOps && time.Since(start) < d; n++ {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return 0, 0, 0, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, 0, 0, err
		}
		_ = h.RecordValue(min(max(time.Since(t0).Microseconds(), histMin), histMax))
	}
	return float64(n) / time.Since(start).Seconds(), float64(h.ValueAtQuantile(50)), float64(h.ValueAtQuantile(99)), nil
}

// seqWrite writes up to size bytes in 1 MiB blocks of random data and
// fsyncs; the fsync is inside the timing, so the figure is what reaches
// the disk, not the page cache.
func seqWrite(path string, d time.Duration, size int64) (float64, int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	_, _ = rand.Read(buf)
	start := time.Now()
	var written int64
	for written < size && time.Since(start) < d {
		n, err := f.Write(buf)
		if err != nil {
			return 0, 0, err
		}
		written += int64(n)
	}
	if err := f.Sync(); err != nil {
		return 0, 0, err
	}
	return float64(written) / (1 << 20) / time.Since(start).Seconds(), written, nil
}

// probeAfterCatchUp measures the disk's sequential write again right
// after a catch-up, in dir, and takes the fraction against the larger of
// that and the limits phase's figure. This machine's virtual disk moved
// between 187 and 811 MiB/s from one run to the next, so one probe minutes
// before says little about the disk a catch-up met; and a probe right
// after one read lower after a run that had just written its image with
// O_DIRECT (230-256 MB/s, against 310-346 after the buffered build's
// runs, same invocation), which would flatter it. The larger of the two
// is the conservative choice. Without lim nothing is measured.
func probeAfterCatchUp(dir string, o options, lim *limitsResult, res *catchUpResult) {
	if lim == nil {
		return
	}
	res.DiskSeqMBPerS, res.DiskProbe = lim.SeqWriteMiBSec*(1<<20)/1e6, "limits phase"
	p := filepath.Join(dir, "seq-after-catch-up")
	defer func() { _ = os.Remove(p) }()
	if mib, _, err := seqWrite(p, time.Duration(o.LimitsSeconds*float64(time.Second)), o.SeqMB<<20); err == nil {
		res.DiskSeqAfterMBPerS = mib * (1 << 20) / 1e6
		if res.DiskSeqAfterMBPerS > res.DiskSeqMBPerS {
			res.DiskSeqMBPerS, res.DiskProbe = res.DiskSeqAfterMBPerS, "right after this catch-up"
		}
	}
	if res.DiskSeqMBPerS > 0 {
		res.FractionOfDisk = res.InstallMBPerS / res.DiskSeqMBPerS
	}
}

// linksPerSource stays below ext4's 65,000 links per inode.
const linksPerSource = 10_000

// hardLinks creates hard links, as a checkpoint does for each sstable.
// Each source file takes at most linksPerSource links.
func hardLinks(dir string, d time.Duration, maxOps int) (float64, error) {
	ldir := filepath.Join(dir, "links")
	if err := os.MkdirAll(ldir, 0o755); err != nil {
		return 0, err
	}
	var src string
	start := time.Now()
	n := 0
	for ; n < maxOps && time.Since(start) < d; n++ {
		if n%linksPerSource == 0 {
			src = filepath.Join(dir, fmt.Sprintf("link-src-%d", n/linksPerSource))
			if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
				return 0, err
			}
		}
		if err := os.Link(src, filepath.Join(ldir, fmt.Sprintf("l%07d", n))); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
