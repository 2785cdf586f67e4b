package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/cockroachdb/pebble/v2"
	pebblevfs "github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/gbsnap"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/spf13/cobra"
)

// importPlan is what `keelctl import` does (or, with --dry-run, would do).
type importPlan struct {
	Snapshot    string            `json:"snapshot"`
	ShardID     uint64            `json:"shard_id"`
	ReplicaID   uint64            `json:"replica_id"`
	RaftAddress string            `json:"raft_address"`
	Index       uint64            `json:"index"`
	Term        uint64            `json:"term"`
	Members     map[uint64]string `json:"members"`
	Removed     []uint64          `json:"removed"`
	Rewrites    []string          `json:"rewrites"`
	// DeploymentID is the one DIR's NodeHost was created with, or, for a
	// DIR without one, that of --cluster-id (ClusterID, recorded in
	// DIR/cluster-id as keeld does).
	DeploymentID uint64 `json:"deployment_id"`
	ClusterID    string `json:"cluster_id,omitempty"`
	DryRun       bool   `json:"dry_run"`
	Done         bool   `json:"done"`
}

func newImportCmd(g *globals) *cobra.Command {
	var snap, members string
	var replicaID uint64
	var dryRun bool
	var clusterID string
	cmd := &cobra.Command{
		Use:   "import --snapshot PATH --members 1=HOST:PORT,... --replica-id N [--dry-run] DIR",
		Short: "Disaster recovery: rewrite a stopped replica to restart from an exported snapshot",
		Long: `import rewrites replica N's history in DIR (keeld's --data-dir, Raft log in
DIR/raft, state in DIR/sm) so it restarts from the exported snapshot PATH with
--members as the shard's membership (Dragonboat's tools.ImportSnapshot, via
host.Import). Run it on every member with the same snapshot and members, with
every member stopped, then restart them as after a reboot (keeld does this by
itself; an embedding host starts the replica with no initial members).
Replicas left out of --members are marked removed: never restart them. Every
write after the snapshot's index is lost.

It refuses: a snapshot that fails verify, a snapshot of another shard than the
replica in DIR, members that do not include N or give N another address than
the one DIR's NodeHost was created with, and a DIR a running process holds.
--dry-run prints the plan and writes nothing.`,
		Args: args("DIR"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if snap == "" || members == "" || replicaID == 0 {
				return fmt.Errorf("%w: import needs --snapshot, --members and --replica-id", errUsage)
			}
			m, err := parseMembers(members)
			if err != nil {
				return err
			}
			plan, err := planImport(g, a[0], snap, m, replicaID)
			if err != nil {
				return err
			}
			if plan.DeploymentID == 0 {
				if err := host.CheckClusterName(clusterID); err != nil {
					return fmt.Errorf("%w: --cluster-id: %v", errUsage, err)
				}
				plan.ClusterID, plan.DeploymentID = clusterID, host.DeploymentID(clusterID)
			}
			plan.DryRun = dryRun
			if !dryRun {
				if err := doImport(g, a[0], plan, m); err != nil {
					return err
				}
				plan.Done = true
			}
			if g.json {
				return g.printJSON(plan)
			}
			printPlan(g, plan)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&snap, "snapshot", "", "exported snapshot directory (snapshot-<index>/ or its parent)")
	f.StringVar(&members, "members", "", `the shard's new membership, "1=host:port,2=host:port,..."`)
	f.Uint64Var(&replicaID, "replica-id", 0, "the replica DIR holds (or will hold)")
	f.BoolVar(&dryRun, "dry-run", false, "show what would change and write nothing")
	f.StringVar(&clusterID, "cluster-id", "keel", "keeld's --cluster-id, for a DIR without a Raft log yet (an existing one keeps the ID it was created with)")
	return cmd
}

// planImport checks every input and returns the plan; it writes nothing.
func planImport(g *globals, dir, snap string, members map[uint64]string, replicaID uint64) (importPlan, error) {
	addr, ok := members[replicaID]
	if !ok {
		return importPlan{}, fmt.Errorf("%w: --members (%s) does not include replica %d", errUnsafe, host.FormatMembers(members), replicaID)
	}
	kind, snapDir, _, err := findSnapshot(snap)
	if err != nil {
		return importPlan{}, err
	}
	if kind != "export" {
		return importPlan{}, fmt.Errorf("%w: --snapshot must be an export directory (snapshot-<index>/ with its metadata), not a lone %s", errUsage, kind)
	}
	quiet := *g
	quiet.stderr = io.Discard
	rep, err := verifyPath(&quiet, snapDir)
	if err != nil {
		return importPlan{}, err
	}
	ss := rep.Metadata.raw
	shard := rep.Stream.ShardID
	nhDir, smRoot := g.nodeHostDir, g.smRoot
	if nhDir == "" {
		nhDir = filepath.Join(dir, "raft")
	}
	if smRoot == "" {
		smRoot = filepath.Join(dir, "sm")
	}
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return importPlan{}, fmt.Errorf("%w: %s is not a directory", errNotKeel, dir)
	}
	// The replicas DIR already holds must be this one: importing shard 2's
	// snapshot over shard 1's replica, or as another replica ID, would
	// leave a directory that belongs to nobody.
	reps, err := filepath.Glob(filepath.Join(smRoot, "shard-*", "replica-*"))
	if err != nil {
		return importPlan{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	for _, r := range reps {
		var s, id uint64
		if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(r)), "shard-%d", &s); err != nil {
			continue
		}
		if _, err := fmt.Sscanf(filepath.Base(r), "replica-%d", &id); err != nil {
			continue
		}
		if s != shard {
			return importPlan{}, fmt.Errorf("%w: the snapshot is of shard %d but %s holds shard %d (replica %d)", errUnsafe, shard, dir, s, id)
		}
		if id != replicaID {
			return importPlan{}, fmt.Errorf("%w: %s holds replica %d of shard %d, not replica %d", errUnsafe, dir, id, s, replicaID)
		}
		if err := checkNotLive(r); err != nil {
			return importPlan{}, err
		}
	}
	did, err := checkNodeHostAddress(nhDir, addr, replicaID)
	if err != nil {
		return importPlan{}, err
	}
	if did == 0 {
		// No Raft log yet: keeld's record of the cluster, if DIR has one.
		if b, err := os.ReadFile(filepath.Join(dir, "cluster-id")); err == nil {
			did = host.DeploymentID(strings.TrimSpace(string(b)))
		}
	}
	if err := checkImportMembers(ss.Membership, members); err != nil {
		return importPlan{}, err
	}
	plan := importPlan{
		Snapshot: snapDir, ShardID: shard, ReplicaID: replicaID, RaftAddress: addr,
		Index: ss.Index, Term: ss.Term, Members: members, Removed: []uint64{}, DeploymentID: did,
		Rewrites: []string{
			nhDir + fmt.Sprintf(" (Raft log: the snapshot and the new membership replace replica %d's history; its snapshot directory is replaced)", replicaID),
			filepath.Join(smRoot, fmt.Sprintf("shard-%d", shard), fmt.Sprintf("replica-%d", replicaID)) +
				" (state: replaced by the snapshot's image when the replica next starts)",
		},
	}
	removed := map[uint64]bool{}
	for _, set := range []map[uint64]string{ss.Membership.Addresses, ss.Membership.NonVotings, ss.Membership.Witnesses} {
		for id := range set {
			if _, ok := members[id]; !ok {
				removed[id] = true
			}
		}
	}
	for id := range ss.Membership.Removed {
		removed[id] = true
	}
	for id := range removed {
		plan.Removed = append(plan.Removed, id)
	}
	sort.Slice(plan.Removed, func(i, j int) bool { return plan.Removed[i] < plan.Removed[j] })
	return plan, nil
}

// checkImportMembers refuses what tools.ImportSnapshot's checkMembers
// refuses, with a message naming the replica.
func checkImportMembers(old pb.Membership, members map[uint64]string) error {
	for id, addr := range members {
		if a, ok := old.Addresses[id]; ok && a != addr {
			return fmt.Errorf("%w: replica %d had address %s in the snapshot; --members gives %s", errUnsafe, id, a, addr)
		}
		if _, ok := old.NonVotings[id]; ok {
			return fmt.Errorf("%w: replica %d is a non-voting member in the snapshot; it cannot be imported as a voting one", errUnsafe, id)
		}
		if _, ok := old.Witnesses[id]; ok {
			return fmt.Errorf("%w: replica %d is a witness in the snapshot; it cannot be imported as a voting one", errUnsafe, id)
		}
		if old.Removed[id] {
			return fmt.Errorf("%w: replica %d was removed from the shard; a removed replica ID cannot come back", errUnsafe, id)
		}
	}
	return nil
}

// checkNotLive refuses a replica directory whose image a process holds.
func checkNotLive(replicaDir string) error {
	cur, err := engine.NewRoot(replicaDir, nil).Current()
	if err != nil || cur == "" {
		// Damaged or empty: the import replaces it anyway.
		return nil
	}
	img := filepath.Join(replicaDir, cur)
	// Pebble's lock (re)creates the LOCK file, which bumps its mtime; put
	// it back so a dry run leaves every file as it was.
	lockPath := filepath.Join(img, "LOCK")
	st, statErr := os.Stat(lockPath)
	lock, err := pebble.LockDirectory(img, pebblevfs.Default)
	if err != nil {
		if isLockErr(err) {
			return fmt.Errorf("%w: %s is held by a running process; stop it first", errLive, img)
		}
		return fmt.Errorf("%w: lock %s: %w", errOpen, img, err)
	}
	err = lock.Close()
	if statErr == nil {
		_ = os.Chtimes(lockPath, st.ModTime(), st.ModTime())
	} else {
		_ = os.Remove(lockPath)
	}
	return err
}

// checkNodeHostAddress refuses an address other than the one DIR's
// NodeHost directory records (Dragonboat's dragonboat.ds flag file, a
// RaftDataStatus), and a NodeHost directory a process holds. It returns the
// deployment ID recorded there (0 when there is no flag file): the import
// must open the directory under it.
func checkNodeHostAddress(nhDir, addr string, replicaID uint64) (uint64, error) {
	// Dragonboat keeps one in the NodeHost directory and one in each
	// <hostname>/<deployment ID> directory under it.
	flags, err := filepath.Glob(filepath.Join(nhDir, "*", "*", "dragonboat.ds"))
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errUsage, err)
	}
	if _, err := os.Stat(filepath.Join(nhDir, "dragonboat.ds")); err == nil {
		flags = append([]string{filepath.Join(nhDir, "dragonboat.ds")}, flags...)
	}
	var did uint64
	for _, f := range flags {
		data, err := os.ReadFile(f)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", errOpen, err)
		}
		var s pb.RaftDataStatus
		if len(data) < 8 || !bytes.Equal(data[:8], gbsnap.FlagFileHash(data[8:])) || s.Unmarshal(data[8:]) != nil {
			return 0, fmt.Errorf("%w: %s is damaged; Dragonboat will not open this NodeHost directory", errNotKeel, f)
		}
		if s.Address != addr {
			return 0, fmt.Errorf("%w: %s was created for Raft address %s, but --members gives replica %d %s", errUnsafe, nhDir, s.Address, replicaID, addr)
		}
		if did == 0 {
			did = s.DeploymentId
		}
	}
	return did, nil
}

// doImport runs host.Import with the NodeHostConfig keeld uses.
func doImport(g *globals, dir string, plan importPlan, members map[uint64]string) error {
	nhDir := g.nodeHostDir
	if nhDir == "" {
		nhDir = filepath.Join(dir, "raft")
	}
	nhc := host.NodeHostConfig(nhDir, plan.RaftAddress)
	nhc.DeploymentID = plan.DeploymentID
	if plan.ClusterID != "" {
		if err := writeClusterID(dir, plan.ClusterID); err != nil {
			return fmt.Errorf("%w: %v", errOpen, err)
		}
	}
	// Dragonboat logs what it does at length; keelctl reports the outcome.
	host.UseSlog(slog.New(slog.NewTextHandler(io.Discard, nil)), slog.LevelError)
	if err := host.Import(nhc, plan.Snapshot, members, plan.ReplicaID); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w: %w", errOpen, err)
		}
		return err
	}
	return nil
}

func printPlan(g *globals, p importPlan) {
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "snapshot\t%s\n", p.Snapshot)
	fmt.Fprintf(w, "index\t%d (term %d)\n", p.Index, p.Term)
	fmt.Fprintf(w, "shard\t%d\n", p.ShardID)
	fmt.Fprintf(w, "replica\t%d at %s\n", p.ReplicaID, p.RaftAddress)
	fmt.Fprintf(w, "members\t%s\n", host.FormatMembers(p.Members))
	if len(p.Removed) > 0 {
		fmt.Fprintf(w, "removed\t%v (never restart them)\n", p.Removed)
	}
	for _, r := range p.Rewrites {
		fmt.Fprintf(w, "rewrites\t%s\n", r)
	}
	fmt.Fprintf(w, "loses	every write after index %d\n", p.Index)
	_ = w.Flush()
	switch {
	case p.DryRun:
		fmt.Fprintln(g.stdout, "dry run: nothing written")
	case p.Done:
		fmt.Fprintf(g.stdout, "imported: start replica %d as after a reboot, with no initial members (keeld does)\n", p.ReplicaID)
	}
}

// writeClusterID records name in DIR/cluster-id, as keeld does for a new
// data directory, unless DIR has one; keeld then checks its --cluster-id
// against it.
func writeClusterID(dir, name string) error {
	p := filepath.Join(dir, "cluster-id")
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.WriteString(name + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}
