package main

import (
	"net/http"
	"strconv"
	"time"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/logcompact"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics holds keeld's Prometheus instruments on a private registry, so a
// test or an embedding program can run several servers in one process.
type metrics struct {
	reg      *prometheus.Registry
	handler  http.Handler
	requests *prometheus.CounterVec
	proposal *prometheus.HistogramVec
	read     *prometheus.HistogramVec
	// forwarded counts requests sent on to another process (router.go).
	forwarded prometheus.Counter
	// compactors exports every replica's log compactor; a replica joined
	// at runtime adds its own (shardjoin.go).
	compactors *logcompact.Collector
}

// latencyBuckets run from 0.5 ms (a local fsync-free apply) to about 8 s
// (past requestTimeout, so timeouts land in the last finite bucket).
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 15)

func newMetrics(s *server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_http_requests_total",
			Help: "HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		proposal: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keel_proposal_duration_seconds",
			Help:    "Time from proposing a write to its result, by operation, errors included.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		read: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keel_read_duration_seconds",
			Help:    "Time to serve a read, by operation and consistency (linearizable or stale).",
			Buckets: latencyBuckets,
		}, []string{"op", "consistency"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keel_forwarded_requests_total",
			Help: "Requests for a shard this process does not host, forwarded to one that does.",
		}),
	}
	m.reg.MustRegister(
		m.requests, m.proposal, m.read, m.forwarded,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if s.nh != nil {
		if g := host.PeerGuardOf(s.nh.NodeHostConfig()); g != nil {
			m.reg.MustRegister(peerCollector{g})
		}
	}
	// Every replica's compactor, labelled by shard and replica. Compaction
	// is on for all replicas or none (--log-compaction).
	lc := logcompact.NewCollector()
	compacting := false
	if s.svc != nil {
		for _, ss := range s.svc.byShard {
			if ss.comp != nil {
				lc.Add(ss.comp)
				compacting = true
			}
		}
	}
	// The log range is logcompact's when it runs, with more detail; two
	// collectors may not describe the same series.
	m.reg.MustRegister(&replicaCollector{s: s, logGauges: !compacting})
	if compacting {
		m.reg.MustRegister(lc)
	}
	m.compactors = lc
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

// timeProposal runs fn and records its duration as a proposal of op.
func (m *metrics) timeProposal(op string, fn func() error) error {
	start := time.Now()
	err := fn()
	m.proposal.WithLabelValues(op).Observe(time.Since(start).Seconds())
	return err
}

// timeRead runs fn and records its duration as a read of op.
func (m *metrics) timeRead(op string, stale bool, fn func() error) error {
	c := "linearizable"
	if stale {
		c = "stale"
	}
	start := time.Now()
	err := fn()
	m.read.WithLabelValues(op, c).Observe(time.Since(start).Seconds())
	return err
}

// replicaCollector reads every hosted replica's state on each scrape, so
// the values are current and nothing polls in the background. A figure
// that belongs to one replica carries the labels shard and replica (the
// same as logcompact's series, which share names with two of these); the
// disk figures are the process's (all shards share one data directory).
type replicaCollector struct {
	s *server
	// logGauges is set when this collector exports the log's range: with
	// log compaction off (with it on, logcompact's collector does).
	logGauges bool
}

// replicaLabels label every per-replica series.
var replicaLabels = []string{"shard", "replica"}

var (
	descApplied = prometheus.NewDesc("keel_applied_index", "Last Raft index applied to the state machine.", replicaLabels, nil)
	descLeader  = prometheus.NewDesc("keel_is_leader", "1 when this replica is the shard's leader.", replicaLabels, nil)
	descLeaderK = prometheus.NewDesc("keel_leader_known", "1 when this replica knows a leader.", replicaLabels, nil)
	descTerm    = prometheus.NewDesc("keel_raft_term", "Raft term of the known leader.", replicaLabels, nil)
	descLogLast = prometheus.NewDesc("keel_raft_log_last_index", "Last index in the local Raft log.", replicaLabels, nil)
	descLogFrst = prometheus.NewDesc("keel_raft_log_first_index", "First index still held in the local Raft log.", replicaLabels, nil)
	descKeys    = prometheus.NewDesc("keel_engine_keys", "User keys in the engine (estimated for large data sets).", replicaLabels, nil)
	descBytes   = prometheus.NewDesc("keel_engine_bytes", "User data bytes in the engine (estimated for large data sets).", replicaLabels, nil)
	descSnap    = prometheus.NewDesc("keel_snapshots_total", "Snapshot work by kind: prepared, saved and save_failed (streams and exports sent), received and receive_failed (images installed or refused), and the timer's taken, skipped, rejected and failed runs.", append([]string{"kind"}, replicaLabels...), nil)
	descDisk    = prometheus.NewDesc("keel_disk_usage_bytes", "Disk blocks allocated under the data directory, by component: sm (Keel's Pebble images) and raft (Dragonboat's log).", []string{"component"}, nil)
)

func (c *replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descApplied, descLeader, descLeaderK, descTerm, descKeys, descBytes, descSnap, descDisk} {
		ch <- d
	}
	if c.logGauges {
		ch <- descLogLast
		ch <- descLogFrst
	}
}

func (c *replicaCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	for _, p := range s.route.placed() { // joined replicas too
		if s.route.hosted(p.ShardID) == nil {
			continue // removed: its tablet and log are gone
		}
		c.collectReplica(ch, p.ShardID, p.ReplicaID)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descDisk, float64(diskUsage(s.cfg.SMDir())), "sm")
	gauge(descDisk, float64(diskUsage(s.cfg.RaftDir())), "raft")
}

// collectReplica sends one replica's series.
func (c *replicaCollector) collectReplica(ch chan<- prometheus.Metric, shardID, replicaID uint64) {
	s := c.s
	lv := []string{strconv.FormatUint(shardID, 10), strconv.FormatUint(replicaID, 10)}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	if m := s.factory.StateMachine(shardID, replicaID); m != nil {
		gauge(descApplied, float64(m.AppliedIndex()))
	}
	leader, term, ok, err := s.nh.GetLeaderID(shardID)
	known := err == nil && ok && leader != 0
	gauge(descLeader, b2f(known && leader == replicaID))
	gauge(descLeaderK, b2f(known))
	if known {
		gauge(descTerm, float64(term))
	}
	if c.logGauges {
		if lr, err := s.nh.GetLogReader(shardID); err == nil {
			first, last := lr.GetRange()
			gauge(descLogFrst, float64(first))
			gauge(descLogLast, float64(last))
		}
	}
	if ls := s.route.hosted(shardID); ls != nil {
		if st, err := ls.client.LocalStats(false); err == nil {
			gauge(descKeys, float64(st.Keys))
			gauge(descBytes, float64(st.Bytes))
		}
	}
	counter := func(kind string, v uint64) {
		ch <- prometheus.MustNewConstMetric(descSnap, prometheus.CounterValue, float64(v), append([]string{kind}, lv...)...)
	}
	snaps := s.snapshotStatusOf(shardID, replicaID)
	counter("prepared", snaps.Prepared)
	counter("saved", snaps.Saved)
	counter("save_failed", snaps.SaveFailed)
	counter("received", snaps.Received)
	counter("receive_failed", snaps.ReceiveFailed)
	counter("staged", snaps.Staged)
	counter("stage_failed", snaps.StageFailed)
	counter("adopted", snaps.Adopted)
	counter("timer_taken", snaps.TimerTaken)
	counter("timer_skipped", snaps.TimerSkipped)
	counter("timer_rejected", snaps.TimerRejected)
	counter("timer_failed", snaps.TimerFailed)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
