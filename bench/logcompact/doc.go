// Package logcompact (bench) measures the Raft log's allocated disk bytes
// over time during a long write run through a three-replica in-process
// cluster, with Keel's log compaction on and off. Run it with
//
//	go test -run '^$' -bench LogDisk -benchtime 200000x ./bench/logcompact
//
// It writes bench/results/logcompact.json: one series per mode, each a list
// of {seconds, writes, bytes} samples (max over replicas, every 250 ms).
package logcompact
