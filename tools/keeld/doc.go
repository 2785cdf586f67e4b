// Command keeld is Keel's reference host database: one process (a
// Dragonboat NodeHost with Keel's on-disk state machine) serving replicas
// of one or many Keel shards over a small HTTP API.
//
// # Running
//
// With no flags keeld runs a single-replica cluster (shard 1, replica 1)
// with its data in ./keel-data, HTTP on 127.0.0.1:8080 and Raft on
// 127.0.0.1:63001. A three-replica shard is three processes started with
// the same --members list and their own --replica-id. A new replica joins a
// running shard with --join after POST /admin/members/{id} on a member.
// Flags are parsed by config.go; a bad command line exits with status 2 and
// a one-line error. SIGINT and SIGTERM shut down gracefully and exit 0.
//
// # Shards
//
// --shards N splits the keyspace into N shards (IDs 1..N); with --members
// every process hosts a replica of each. --shard-map FILE places shards on
// processes instead. The key-to-shard rule is part of the data format:
// key k belongs to shard 1 + FNV-1a-64(hashPart(k)) mod N, where
// hashPart(k) is the bytes between the first '{' and the first '}' after
// it when that section is non-empty (Redis Cluster's hash-tag rule), and
// the whole key otherwise; shardmap.go has the rule and the map's format,
// placement.go which replicas a process runs, router.go how a request
// reaches its shard (forwarding included) and scan.go how scans merge.
//
// # On disk
//
//	<data-dir>/raft   Dragonboat's NodeHost directory: Raft log (LogDB),
//	                  bootstrap record, snapshot metadata
//	<data-dir>/sm     Keel state machine root (host.Config.RootDir):
//	                  shard-<id>/replica-<id>/ holds the Pebble images
//	<data-dir>/cluster-id  the --cluster-id the directory belongs to
//	<data-dir>/ballast space held back for a full disk (--disk-ballast)
//
// When the filesystem's free space drops below --disk-reserve the replica
// turns read-only (writes answer 507), deletes its ballast and hands
// leadership to another member; it takes writes again by itself once the
// space is back. A write that still finds no space ends the process with
// one line and exit status 3. See diskguard.go.
//
// A restart on the same data directory restarts the bootstrapped replica;
// --members and --join are then ignored, as Dragonboat keeps the membership
// in its log. A data directory belongs to one replica ID, one Raft
// address and one --cluster-id; keeld refuses (exit 1) to start another on
// it, and a Raft log written before --cluster-id existed (under
// Dragonboat's default deployment ID, which cannot be changed).
//
// # HTTP API
//
//	PUT    /kv/{key}            body = value; 204
//	GET    /kv/{key}[?stale=true] raw value; 404 when missing
//	DELETE /kv/{key}            204 (also when the key was missing)
//	GET    /kv?prefix=&start=&end=&limit=&stale=&encoding=base64
//	POST   /txn                 {"if":[...],"then":[...]} (see README.md)
//	GET    /status              replica, leader, members, log range, stats
//	                            (?members=local: no read through the leader)
//	GET    /metrics             Prometheus text format; per-shard series labelled shard, replica
//	POST   /admin/snapshot      request a snapshot; {"index":n}
//	POST   /admin/export        exported snapshot under --export-dir
//	POST   /admin/members/{id}  addr=host:port in the query or body
//	DELETE /admin/members/{id}  404 unless id is a member; this process's
//	                            own replica leads first (selfremove.go)
//	/admin/shards/{s}/snapshot, /export, /members/{id}: the same, for shard s
//	POST   /admin/shards/{s}/join  start this process's replica of s, joining
//	GET    /admin/shards/{s}/hash  this process's replica's StateHash
//
// Moving a shard's replica between processes (add, join, delete) and the
// StateHash endpoint are described in shardjoin.go.
//
// Each endpoint takes only the query parameters it reads (params.go); an
// unknown or repeated one, or a bad escape, is a 400. With encoding=base64
// a scan's prefix, start and end are base64 like its answer; without it a
// page holding bytes that are not UTF-8 is a 400 (a JSON string cannot
// carry them). Txn bodies are strict JSON (jsonbody.go): no duplicate
// names, valid UTF-8 only; "encoding":"base64" for binary keys.
//
// The key is the raw path after /kv/, URL-unescaped; routing is by hand
// so keys are never cleaned. A path with a bad escape (/kv/bad%zz) never
// reaches keeld: Go's request parser refuses it with a plain-text 400.
// Every other error is JSON {"error": "..."}: 400 for a
// malformed request, 404, 405, 413 for a body or value over the limit, 409
// when Dragonboat rejects a membership change or snapshot, 507 for a write
// while the disk is over its reserve, and 503 (with
// Retry-After) whenever the shard cannot serve right now: no leader, not
// ready, busy, or the request's 5 s deadline passed; 401 without the
// token when one is configured.
//
// # Security
//
// keeld listens on loopback unless told otherwise, and by default nothing
// is authenticated. --token or --token-file makes every endpoint require
// "Authorization: Bearer <token>" (401 otherwise, checked before anything
// is read or changed; compared in constant time). --http-tls-cert and
// --http-tls-key serve the API over TLS; --raft-tls-ca, --raft-tls-cert
// and --raft-tls-key turn on Dragonboat's mutual TLS between replicas, so
// a peer without a certificate from that CA cannot take part. Slow
// clients are bounded by the server's header, read and write timeouts,
// 64 KiB of headers, and --max-conns open connections (default 1024). At
// the cap a new connection takes the slot of the longest-idle keep-alive
// connection, else of one open a second without a complete request
// header, else it is answered 503 with Retry-After and closed: idle or
// silent clients never lock new ones out. See security.go and conns.go.
//
// Between replicas: --cluster-id NAME (default "keel") is hashed into
// Dragonboat's deployment ID (host.DeploymentID), recorded in
// <data-dir>/cluster-id at the first start and checked at every later one
// (another name: exit 1), so replicas of different clusters drop each
// other's messages (cluster.go). host.PeerGuard, Keel's Raft transport,
// drops and counts in /metrics (keel_raft_peer_address_mismatch_total,
// keel_raft_peer_dropped_total{reason}) messages that claim a member's
// replica ID from another address, malformed batches and messages for
// shards this process does not host; none of them can crash the process.
// Neither is authentication: the cluster ID and the source address travel
// in clear text as the sender wrote them. Only mutual TLS keeps out a peer
// that copies them, and without it such a peer can disrupt the shard.
//
// # Profiling
//
// KEEL_PPROF=127.0.0.1:6060 in the environment serves net/http/pprof on
// that loopback address, on its own listener without the token or TLS
// (pprof.go). It is off by default and refuses non-loopback addresses.
//
// # Concurrency
//
// net/http serves each request on its own goroutine. The server holds no
// mutable state of its own: the NodeHost, the plugin client and the
// Prometheus instruments are safe for concurrent use, and /status and
// /metrics read the replica on demand rather than from a poller.
package main
