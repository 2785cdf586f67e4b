# Keel's developer entry points. `make run` starts keeld with its defaults;
# `make test` is what CI runs (.ci/run).

GO ?= go
# Extra flags for keeld under `make run`, e.g. make run ARGS='--log-level info'.
ARGS ?=
# Micro-benchmarks run by `make bench`: BENCH_PKGS for time (codec, Update,
# lookups), SNAPSHOT_BENCH_PKGS for a count of iterations (checkpoint,
# stream): their untimed setup per iteration is large, so a time target
# would run for an hour. bench/cluster is the cluster benchmark.
BENCH_PKGS ?= ./sm/
SNAPSHOT_BENCH_PKGS ?= ./snapshot/
SNAPSHOT_BENCHTIME ?= 5x
# bench/inproc: replicated writes with no HTTP (three NodeHosts in one
# process), the baseline that splits the cluster benchmark's cost.
INPROC_BENCHTIME ?= 20000x
RESULTS ?= bench/results
# Extra flags for the cluster benchmark, e.g. CLUSTER_ARGS='-n 50000 -restart-large-mb 2048'.
CLUSTER_ARGS ?=
# Extra flags for the many-shards benchmark, e.g. SHARDS_ARGS='-shards 1,100 -kinds noop,keel'.
SHARDS_ARGS ?=
# The cluster benchmark per shard count (bench-cluster-shards): the
# counts, the git ref the baseline keeld is built from, and extra flags
# (e.g. CLUSTER_SHARDS_ARGS='-rounds 3 -n 30000').
CLUSTER_SHARDS ?= 1,4,16
BASE_REF ?= main
CLUSTER_SHARDS_ARGS ?=
# 1 adds the 1 GB state to the snapshot micro-benchmarks.
BENCH_LARGE ?= 1

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: build keeld plugin run test lint bench bench-quick bench-logcompact bench-shards bench-catchup bench-cluster-shards chaos fuzz clean help

## build: compile every package and put keeld in ./bin/keeld
build:
	$(GO) build ./...
	$(GO) build -o bin/keeld ./tools/keeld

keeld:
	$(GO) build -o bin/keeld ./tools/keeld

## plugin: build the Keel storage plugin ./bin/keel.so (load it with keeld --sm-plugin)
# The host must be built with the same toolchain and flags: `make build plugin`.
plugin:
	$(GO) build -buildmode=plugin -o bin/keel.so ./storageplugin/keelso

## run: start a single-replica keeld: data in ./keel-data, HTTP on 127.0.0.1:8080
# The binary is run directly (not through `go run`) so Ctrl-C reaches keeld,
# which shuts down cleanly.
run: keeld
	./bin/keeld $(ARGS)

## test: race detector on engine, sm, snapshot and host, then the whole suite (CI runs this)
# Race runs first so the output ends with the full suite's `ok` lines.
test:
	$(GO) test -race -count=1 -timeout 20m ./engine/... ./sm/... ./snapshot/... ./host/...
	$(GO) test -count=1 -timeout 20m ./...

## lint: gofmt must list nothing; go vet must pass
lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -l lists:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

## bench: micro-benchmarks, the cluster benchmark and its --shards 1,4,16 A/B (~45 min); JSON and PNG in bench/results
# Figures are reported against targets, never asserted; see bench/README.md.
bench: keeld
	@mkdir -p $(RESULTS)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1s -count 1 -timeout 30m $(BENCH_PKGS) | tee $(RESULTS)/go-bench.txt
	KEEL_BENCH_LARGE=$(BENCH_LARGE) $(GO) test -run '^$$' -bench . -benchmem -benchtime $(SNAPSHOT_BENCHTIME) -count 1 -timeout 60m $(SNAPSHOT_BENCH_PKGS) | tee -a $(RESULTS)/go-bench.txt
	$(GO) test -run '^$$' -bench . -benchtime $(INPROC_BENCHTIME) -count 1 -timeout 20m ./bench/inproc/ | tee -a $(RESULTS)/go-bench.txt
	$(GO) run ./bench/gobench -in $(RESULTS)/go-bench.txt -out $(RESULTS)
	$(GO) run ./bench/cluster -keeld bin/keeld -out $(RESULTS) $(CLUSTER_ARGS)
	$(MAKE) bench-logcompact
	$(MAKE) bench-shards
	$(MAKE) bench-catchup | tee $(RESULTS)/catchup.txt
	$(MAKE) bench-cluster-shards
	$(MAKE) bench-cluster-catchup

## bench-quick: the same harness in under a minute (tiny sizes, one K); bench/results/quick
# CI may run it to keep the harness working; it never checks a figure.
bench-quick: keeld
	@mkdir -p $(RESULTS)/quick
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 20ms -count 1 -timeout 5m $(BENCH_PKGS) | tee $(RESULTS)/quick/go-bench.txt
	$(GO) test -run '^$$' -bench '/(state=10MB|keel|baseline-iterate|disk-seq-write|snappy-over-stream)/state=10MB' -benchmem -benchtime 1x -count 1 -timeout 5m $(SNAPSHOT_BENCH_PKGS) | tee -a $(RESULTS)/quick/go-bench.txt
	$(GO) test -run '^$$' -bench . -benchtime 300x -count 1 -timeout 5m ./bench/inproc/ | tee -a $(RESULTS)/quick/go-bench.txt
	$(GO) run ./bench/gobench -in $(RESULTS)/quick/go-bench.txt -out $(RESULTS)/quick
	$(GO) run ./bench/cluster -quick -keeld bin/keeld -out $(RESULTS)/quick $(CLUSTER_ARGS)
	$(GO) run ./bench/shards -quick -out $(RESULTS)/quick $(SHARDS_ARGS)

## bench-logcompact: the Raft log's disk use with log compaction on and off; bench/results/logcompact.{json,png}
bench-logcompact:
	$(GO) test -run '^$$' -bench LogDisk -benchtime 200000x -count 1 -timeout 30m ./bench/logcompact

## bench-shards: 1-1,000 shards per NodeHost, Keel vs a no-op state machine (~15 min); bench/results/shards.json, shards-*.png
# Each figure comes from a child process of its own; see bench/README.md.
bench-shards:
	@mkdir -p $(RESULTS)
	$(GO) run ./bench/shards -out $(RESULTS) $(SHARDS_ARGS)

## bench-catchup: a follower catching up by snapshot in-process (CATCHUP_MB, default 200); see bench/README.md
CATCHUP_MB ?= 200
bench-catchup:
	KEEL_CATCHUP_MB=$(CATCHUP_MB) $(GO) test -run '^$$' -bench CatchUp -benchtime 1x -count 1 -timeout 20m ./bench/catchup

## bench-cluster-shards: keeld --shards 1, 4, 16 vs a keeld built from BASE_REF, alternating (~10-15 min); bench/results/cluster-shards/
# Per shard count: PUT/s, p50/p99 and CPU per PUT at K=16 and 256, catch-up
# of a restarted process (every shard by snapshot), restart to every shard
# serving; each with its ratio to the baseline. See bench/README.md.
bench-cluster-shards: keeld
	@mkdir -p $(RESULTS)/cluster-shards
	src="$$(mktemp -d)"; trap 'rm -rf "$$src"' EXIT; \
	git archive $(BASE_REF) | tar -x -C "$$src"; \
	(cd "$$src" && $(GO) build -o $(CURDIR)/bin/keeld-base ./tools/keeld)
	$(GO) run ./bench/cluster -keeld bin/keeld -keeld-base bin/keeld-base -shards-list $(CLUSTER_SHARDS) \
		-phases limits,write,catch-up,restart -seq-mb 256 -n 10000 -k 16,256 -rounds 2 -txn-batch 0 \
		-keeld-args '--log-keep-entries 1000' -catchup-keys 1500 -restart-small-mb 10 -restart-runs 3 \
		-out $(RESULTS)/cluster-shards $(CLUSTER_SHARDS_ARGS)

## bench-cluster-catchup: one keeld of three catching up a 500 MB image by snapshot, vs a keeld built from BASE_REF, alternating (~6 min); bench/results/cluster-catchup/
# The issue's catch-up: restart to caught up, MB/s against the disk's
# sequential write (1 GiB probe, the larger of the limits phase's and one
# right after each run), SaveSnapshot/snapshots per catch-up.
bench-cluster-catchup: keeld
	@mkdir -p $(RESULTS)/cluster-catchup
	src="$$(mktemp -d)"; trap 'rm -rf "$$src"' EXIT; \
	git archive $(BASE_REF) | tar -x -C "$$src"; \
	(cd "$$src" && $(GO) build -o $(CURDIR)/bin/keeld-base ./tools/keeld)
	$(GO) run ./bench/cluster -keeld bin/keeld -keeld-base bin/keeld-base -shards-list 1 \
		-phases limits,catch-up -restart-small-mb 500 -catchup-keys 2000 -rounds 3 \
		-keeld-args '--log-keep-entries 1000' -out $(RESULTS)/cluster-catchup $(CLUSTER_CATCHUP_ARGS)

## chaos: three keeld processes under SIGKILL/SIGSTOP faults, checked with porcupine and keelctl
# make chaos DURATION=30m SEED=123 OUT=integration/results/chaos-30m; the run's
# summary.json, history and logs go to OUT (default: a temp dir kept on failure).
DURATION ?= 2m
SEED ?=
OUT ?=
chaos:
	CHAOS_DURATION=$(DURATION) CHAOS_SEED=$(SEED) CHAOS_OUT=$(if $(OUT),$(abspath $(OUT))) \
		$(GO) test -count=1 -v -run '^TestChaos$$' -timeout 4h ./integration/chaos/

## fuzz: every fuzz target for FUZZTIME each (default 30s); crashers land in testdata/fuzz
FUZZTIME ?= 30s
FUZZ_TARGETS := ./sm:FuzzDecode ./snapshot:FuzzReadStream ./tools/keeld:FuzzHTTP ./tools/keeld:FuzzDecodeTxn
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

## clean: remove build output (never ./keel-data)
clean:
	rm -rf bin

## help: list the targets
help:
	@grep -h '^## ' $(MAKEFILE_LIST) | sed 's/^## //'
