// Package inproc holds a benchmark of replicated writes with no HTTP:
// three Dragonboat NodeHosts with Keel state machines in one process on
// 127.0.0.1, K goroutines writing through client.Client (each write its
// own proposal) or client.Batcher (group commit) on the leader.
//
// It is the baseline that splits the cluster benchmark's cost: the gap
// between BenchmarkProposeK and bench/cluster's write phase at the same K
// is what HTTP, the client and three processes add. There is no
// non-test code; the benchmark lives in inproc_test.go.
package inproc
