package logcompact

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the Stats of registered Compactors as Prometheus
// metrics, labelled by shard and replica. Values are read at scrape time.
type Collector struct {
	// mu guards cs.
	mu sync.Mutex
	cs map[[2]uint64]*Compactor
}

var _ prometheus.Collector = (*Collector)(nil)

var (
	labels        = []string{"shard", "replica"}
	descFirst     = prometheus.NewDesc("keel_raft_log_first_index", "First index of the Raft log.", labels, nil)
	descLast      = prometheus.NewDesc("keel_raft_log_last_index", "Last index of the Raft log.", labels, nil)
	descDisk      = prometheus.NewDesc("keel_raft_log_disk_bytes", "Allocated bytes of the Raft log directories (du), at the last measurement.", labels, nil)
	descTracked   = prometheus.NewDesc("keel_raft_log_estimated_bytes", "Estimated LogDB bytes of the entries in the log.", labels, nil)
	descCompact   = prometheus.NewDesc("keel_raft_log_compactions_total", "Log compactions that moved the first index.", labels, nil)
	descRemoved   = prometheus.NewDesc("keel_raft_log_entries_removed_total", "Entries removed by log compactions.", labels, nil)
	descReclaims  = prometheus.NewDesc("keel_raft_log_reclaims_total", "LogDB compactions run to reclaim disk space.", labels, nil)
	descReclaimed = prometheus.NewDesc("keel_raft_log_reclaimed_bytes_total", "Allocated bytes freed by LogDB compactions (measured).", labels, nil)
	descErrors    = prometheus.NewDesc("keel_raft_log_compaction_errors_total", "Failed compaction steps and reclaims.", labels, nil)
)

// NewCollector returns an empty Collector; Add the Compactors to export.
func NewCollector() *Collector { return &Collector{cs: map[[2]uint64]*Compactor{}} }

// Add exports c; it replaces an earlier Compactor for the same replica.
func (k *Collector) Add(c *Compactor) {
	k.mu.Lock()
	k.cs[[2]uint64{c.cfg.ShardID, c.cfg.ReplicaID}] = c
	k.mu.Unlock()
}

// Remove stops exporting the replica.
func (k *Collector) Remove(shardID, replicaID uint64) {
	k.mu.Lock()
	delete(k.cs, [2]uint64{shardID, replicaID})
	k.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (k *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFirst, descLast, descDisk, descTracked, descCompact,
		descRemoved, descReclaims, descReclaimed, descErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (k *Collector) Collect(ch chan<- prometheus.Metric) {
	k.mu.Lock()
	cs := make([]*Compactor, 0, len(k.cs))
	for _, c := range k.cs {
		cs = append(cs, c)
	}
	k.mu.Unlock()
	for _, c := range cs {
		s := c.Stats()
		lv := []string{strconv.FormatUint(c.cfg.ShardID, 10), strconv.FormatUint(c.cfg.ReplicaID, 10)}
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		ct := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
		}
		g(descFirst, float64(s.FirstIndex))
		g(descLast, float64(s.LastIndex))
		g(descDisk, float64(s.DiskBytes))
		g(descTracked, float64(s.TrackedBytes))
		ct(descCompact, float64(s.Compactions))
		ct(descRemoved, float64(s.EntriesRemoved))
		ct(descReclaims, float64(s.Reclaims))
		ct(descReclaimed, float64(s.BytesReclaimed))
		ct(descErrors, float64(s.Errors))
	}
}
