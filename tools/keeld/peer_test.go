package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/proctest"
)

// strayTimeout bounds how long a stray peer may take to reach the
// replicas: it campaigns once its election timeout (under a second) passes.
const strayTimeout = 30 * time.Second

// metricValue returns the value of the sample named sample (name and
// labels exactly as exposed) in a Prometheus text page, or -1.
func metricValue(page, sample string) float64 {
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if ok && name == sample {
			v, err := strconv.ParseFloat(val, 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// TestStrayRaftPeers runs, beside a three-replica cluster, three keelds
// that send it Raft messages it must drop: one claiming replica 1 from a
// new address (the same cluster), one of another cluster, and one of a
// shard the cluster's processes do not host. Replicas 2 and 3 must count
// each, stay up, and the cluster must keep serving writes. Before
// PeerGuard the first made replicas 2 and 3 panic in Dragonboat's node
// registry within a second.
func TestStrayRaftPeers(t *testing.T) {
	nodes := startCluster(t)
	dir := t.TempDir()
	for _, s := range []struct {
		name   string
		flags  []string
		sample string
	}{
		{"impersonator", []string{"--replica-id", "1"}, "keel_raft_peer_address_mismatch_total"},
		{"other-cluster", []string{"--replica-id", "1", "--cluster-id", "other"}, `keel_raft_peer_dropped_total{reason="cluster_id"}`},
		{"other-shard", []string{"--replica-id", "1", "--shard-id", "2"}, `keel_raft_peer_dropped_total{reason="foreign_shard"}`},
	} {
		stray := newNode(t, s.name, filepath.Join(dir, s.name))
		members := host.FormatMembers(map[uint64]string{1: stray.raftAddr, 2: nodes[1].raftAddr, 3: nodes[2].raftAddr})
		stray.extra = append(s.flags, "--members", members)
		stray.start()
		for _, n := range nodes[1:] {
			// n.proc.Poll returns at once if n's process exits.
			err := n.proc.Poll(strayTimeout, func() error {
				if done, _ := stray.proc.Exited(); done {
					return proctest.Abort(fmt.Errorf("%s exited: %s", s.name, stray.proc.Output()))
				}
				page, err := proctest.Get(httpc, n.url("/metrics"))
				if err != nil {
					return err
				}
				if v := metricValue(string(page), s.sample); v <= 0 {
					return fmt.Errorf("%s = %v", s.sample, v)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %s: %v", s.name, n.name, err)
			}
		}
		t.Logf("%s: dropped by replicas 2 and 3", s.name)
	}
	// The strays still run: the cluster serves writes and linearizable
	// reads through every replica.
	for i, n := range nodes {
		key := fmt.Sprintf("/kv/after-strays-%d", i)
		mustDo(t, http.StatusNoContent, "PUT", n.url(key), []byte("v"))
		if got := mustDo(t, http.StatusOK, "GET", nodes[(i+1)%3].url(key), nil); string(got) != "v" {
			t.Fatalf("%s = %q", key, got)
		}
	}
	for _, n := range nodes {
		if done, _ := n.proc.Exited(); done {
			t.Fatalf("%s exited: %s", n.name, n.proc.Output())
		}
	}
}

// TestClusterIDBinding: a data directory keeps the --cluster-id it was
// created with; another name, or a Raft log from before --cluster-id,
// refuses to start with one line and exit status 1, and the data stays
// usable.
func TestClusterIDBinding(t *testing.T) {
	n := startSingle(t, "--cluster-id", "blue")
	mustDo(t, http.StatusNoContent, "PUT", n.url("/kv/k"), []byte("v"))
	n.stopWith(syscall.SIGTERM)
	if b, err := os.ReadFile(filepath.Join(n.dataDir, clusterIDFile)); err != nil || string(b) != "blue\n" {
		t.Fatalf("%s: %q, %v", clusterIDFile, b, err)
	}

	legacy := t.TempDir()
	if err := os.MkdirAll(filepath.Join(legacy, "raft"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(legacy, "raft", "dragonboat.ds"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dataDir, cluster, want string
	}{
		{n.dataDir, "green", `belongs to cluster "blue", not --cluster-id "green"`},
		{n.dataDir, defaultClusterID, `belongs to cluster "blue"`},
		{legacy, defaultClusterID, "without --cluster-id"},
	} {
		code, out := runKeeld(t, "", "--data-dir", c.dataDir, "--http", proctest.FreeAddrs(t, 1)[0], "--raft-addr", n.raftAddr, "--cluster-id", c.cluster)
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		if code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "keeld: ") || !strings.Contains(out, c.want) {
			t.Fatalf("%s --cluster-id %s: exit %d, output %q; want exit 1 and one line mentioning %q", c.dataDir, c.cluster, code, out, c.want)
		}
	}

	n.start()
	if err := n.waitReady(); err != nil {
		t.Fatal(err)
	}
	if got := mustDo(t, http.StatusOK, "GET", n.url("/kv/k"), nil); string(got) != "v" {
		t.Fatalf("k = %q", got)
	}
}
