// Package catchup holds a benchmark of a follower catching up by snapshot:
// three Dragonboat NodeHosts with Keel state machines in one process on
// 127.0.0.1 (internal/testkit/testcluster), each behind Keel's transport
// (host.PeerGuard) as in keeld, a follower stopped, the leader
// loaded with KEEL_CATCHUP_MB of incompressible data and its log compacted
// behind the follower, then the follower restarted. It times restart to
// the follower's applied index equal to the leader's, splits that time
// into its phases (NodeHost start, first SaveSnapshot on the leader,
// RecoverFromSnapshot start and end on the follower) and counts
// SaveSnapshot calls on the leader and RecoverFromSnapshot calls on the
// follower per catch-up. The disk's sequential write bandwidth (a 256 MiB
// file written and fdatasync'd in the cluster's directory) is measured in
// the same run, so the result is read as a fraction of it.
//
// There is no non-test code; the benchmark lives in catchup_test.go and
// runs with `make bench-catchup`.
package catchup
