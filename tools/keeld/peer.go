package main

import (
	"github.com/keel-db/keel/host"
	"github.com/prometheus/client_golang/prometheus"
)

// peerCollector exports the Raft transport guard's drop counters
// (host.PeerGuard): messages from peers that claimed a member's replica ID
// from another address, came from another cluster, were malformed, or were
// for a shard this process does not host.
type peerCollector struct{ g *host.PeerGuard }

var (
	descPeerMismatch = prometheus.NewDesc("keel_raft_peer_address_mismatch_total",
		"Raft messages dropped because the sender claimed a member's replica ID from an address other than that member's.", nil, nil)
	descPeerDropped = prometheus.NewDesc("keel_raft_peer_dropped_total",
		"Raft messages dropped by the transport guard, by reason: address_mismatch, cluster_id (another --cluster-id), malformed, foreign_shard (a shard this process does not host), non_member (a replica ID not in the shard's membership).", []string{"reason"}, nil)
	descPeerHeld = prometheus.NewDesc("keel_raft_replicate_held_for_snapshot_total",
		"Replicate messages held back (dropped; the leader resends) because a snapshot stream for their replica was still being received: without it the leader would stream the image a second time.", nil, nil)
)

func (peerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPeerMismatch
	ch <- descPeerDropped
	ch <- descPeerHeld
}

func (c peerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.g.Stats()
	ch <- prometheus.MustNewConstMetric(descPeerMismatch, prometheus.CounterValue, float64(st.AddressMismatch))
	ch <- prometheus.MustNewConstMetric(descPeerHeld, prometheus.CounterValue, float64(st.HeldForSnapshot))
	for _, r := range []struct {
		reason string
		n      uint64
	}{{"address_mismatch", st.AddressMismatch}, {"cluster_id", st.ClusterID}, {"malformed", st.Malformed}, {"foreign_shard", st.ForeignShard}, {"non_member", st.NonMember}} {
		ch <- prometheus.MustNewConstMetric(descPeerDropped, prometheus.CounterValue, float64(r.n), r.reason)
	}
}
