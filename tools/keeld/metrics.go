package main

import (
	"net/http"
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
		&replicaCollector{s: s},
	)
	if s.nh != nil {
		if g := host.PeerGuardOf(s.nh.NodeHostConfig()); g != nil {
			m.reg.MustRegister(peerCollector{g})
		}
	}
	if s.svc != nil && s.svc.comp != nil {
		lc := logcompact.NewCollector()
		lc.Add(s.svc.comp)
		m.reg.MustRegister(lc)
	}
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

// replicaCollector reads the replica's state on each scrape, so the values
// are current and nothing polls in the background.
type replicaCollector struct{ s *server }

var (
	descApplied = prometheus.NewDesc("keel_applied_index", "Last Raft index applied to the state machine.", nil, nil)
	descLeader  = prometheus.NewDesc("keel_is_leader", "1 when this replica is the shard's leader.", nil, nil)
	descLeaderK = prometheus.NewDesc("keel_leader_known", "1 when this replica knows a leader.", nil, nil)
	descTerm    = prometheus.NewDesc("keel_raft_term", "Raft term of the known leader.", nil, nil)
	descLogLast = prometheus.NewDesc("keel_raft_log_last_index", "Last index in the local Raft log.", nil, nil)
	descLogFrst = prometheus.NewDesc("keel_raft_log_first_index", "First index still held in the local Raft log.", nil, nil)
	descKeys    = prometheus.NewDesc("keel_engine_keys", "User keys in the engine (estimated for large data sets).", nil, nil)
	descBytes   = prometheus.NewDesc("keel_engine_bytes", "User data bytes in the engine (estimated for large data sets).", nil, nil)
	descSnap    = prometheus.NewDesc("keel_snapshots_total", "Snapshot work by kind: prepared, saved and save_failed (streams and exports sent), received and receive_failed (images installed or refused), and the timer's taken, skipped, rejected and failed runs.", []string{"kind"}, nil)
	descDisk    = prometheus.NewDesc("keel_disk_usage_bytes", "Disk blocks allocated under the data directory, by component: sm (Keel's Pebble images) and raft (Dragonboat's log).", []string{"component"}, nil)
)

// ownLogGauges reports whether this collector exports the log's range:
// with log compaction on, logcompact's collector does, with more detail.
func (c *replicaCollector) ownLogGauges() bool { return c.s.svc == nil || c.s.svc.comp == nil }

func (c *replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descApplied, descLeader, descLeaderK, descTerm, descKeys, descBytes, descSnap, descDisk} {
		ch <- d
	}
	if c.ownLogGauges() {
		ch <- descLogLast
		ch <- descLogFrst
	}
}

func (c *replicaCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descApplied, float64(s.appliedIndex()))
	leader, term, ok, err := s.nh.GetLeaderID(s.cfg.ShardID)
	known := err == nil && ok && leader != 0
	gauge(descLeader, b2f(known && leader == s.cfg.ReplicaID))
	gauge(descLeaderK, b2f(known))
	if known {
		gauge(descTerm, float64(term))
	}
	if lr, err := s.nh.GetLogReader(s.cfg.ShardID); err == nil && c.ownLogGauges() {
		first, last := lr.GetRange()
		gauge(descLogFrst, float64(first))
		gauge(descLogLast, float64(last))
	}
	if st, err := s.client.LocalStats(false); err == nil {
		gauge(descKeys, float64(st.Keys))
		gauge(descBytes, float64(st.Bytes))
	}
	counter := func(kind string, v uint64) {
		ch <- prometheus.MustNewConstMetric(descSnap, prometheus.CounterValue, float64(v), kind)
	}
	snaps := s.snapshotStatus()
	counter("prepared", snaps.Prepared)
	counter("saved", snaps.Saved)
	counter("save_failed", snaps.SaveFailed)
	counter("received", snaps.Received)
	counter("receive_failed", snaps.ReceiveFailed)
	counter("timer_taken", snaps.TimerTaken)
	counter("timer_skipped", snaps.TimerSkipped)
	counter("timer_rejected", snaps.TimerRejected)
	counter("timer_failed", snaps.TimerFailed)
	gauge(descDisk, float64(diskUsage(s.cfg.SMDir())), "sm")
	gauge(descDisk, float64(diskUsage(s.cfg.RaftDir())), "raft")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
