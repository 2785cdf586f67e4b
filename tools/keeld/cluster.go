package main

// The cluster name (--cluster-id) and the file that ties a data directory
// to it.
//
// keeld derives Dragonboat's deployment ID from the name
// (host.DeploymentID: SHA-256, top bit set), so replicas of different
// clusters drop each other's messages at the transport, and it never runs
// with Dragonboat's default ID, which every unconfigured Dragonboat program
// shares. The name is written to <data-dir>/cluster-id when the data
// directory is new (temp file, fsync, rename, fsync of the directory) and
// compared on every later start: another --cluster-id refuses to start
// (exit 1) before Dragonboat opens anything. A data directory whose Raft
// log predates the file (a keeld without --cluster-id) ran under
// Dragonboat's default ID, which Dragonboat records and will not change, so
// keeld refuses it too rather than guess.

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/keel-db/keel/host"
)

// defaultClusterID names the cluster when --cluster-id is not given;
// enough for one cluster on a machine (make run), not for two.
const defaultClusterID = "keel"

// clusterIDFile is the data directory's record of its cluster name.
const clusterIDFile = "cluster-id"

func addClusterFlag(fs *flag.FlagSet, name *string) {
	fs.StringVar(name, "cluster-id", defaultClusterID, "cluster name, the same on every replica of a cluster (letters, digits, '.', '_', '-'); Raft messages from another cluster are dropped. Recorded in the data directory: a restart must give the same name")
}

// checkClusterFlag validates --cluster-id; the error wraps errUsage.
func checkClusterFlag(name string) error {
	if err := host.CheckClusterName(name); err != nil {
		return fmt.Errorf("%w: --cluster-id: %v", errUsage, strings.TrimPrefix(err.Error(), host.ErrConfig.Error()+": "))
	}
	return nil
}

// bindClusterID records cfg.ClusterID in a new data directory or checks it
// against the one recorded. Call it before creating the NodeHost.
func bindClusterID(cfg config) error {
	p := filepath.Join(cfg.DataDir, clusterIDFile)
	b, err := os.ReadFile(p)
	if err == nil {
		got := strings.TrimSpace(string(b))
		if got != cfg.ClusterID {
			return fmt.Errorf("%s belongs to cluster %q, not --cluster-id %q: restart it with --cluster-id %s, or use another --data-dir", cfg.DataDir, got, cfg.ClusterID, got)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", p, err)
	}
	// Dragonboat writes this flag file when it first opens a NodeHost
	// directory.
	if _, err := os.Stat(filepath.Join(cfg.RaftDir(), "dragonboat.ds")); err == nil {
		return fmt.Errorf("%s holds a Raft log from a keeld without --cluster-id (Dragonboat's default deployment ID, which cannot be changed): move its data with keelctl export DIR BACKUP, then keelctl import --cluster-id NAME into a new --data-dir", cfg.DataDir)
	}
	return writeSynced(p, []byte(cfg.ClusterID+"\n"))
}

// writeSynced publishes data at path crash-consistently.
func writeSynced(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
