package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	pebblevfs "github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/logcompact"
	"github.com/keel-db/keel/storageplugin"
	"github.com/lni/dragonboat/v4"
	dbconfig "github.com/lni/dragonboat/v4/config"
	lnivfs "github.com/lni/vfs"
)

// shutdownTimeout bounds how long in-flight HTTP requests may finish after
// SIGINT or SIGTERM.
const shutdownTimeout = 10 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is keeld's main, returning the exit status: 0 after a clean shutdown,
// 2 for a bad command line, 1 when start-up or serving failed. The disk
// guard ends the process itself with exitStorage (3) when storage fails
// under the replica (diskguard.go), and Keel's Pebble with 70 on an
// internal invariant.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage())
		return 0
	}
	if err != nil {
		// The sentinel only classifies; the detail is the message.
		fmt.Fprintf(stderr, "keeld: %s (see keeld -h)\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	setMemoryLimit(cfg.GoMemoryLimitMiB, logger)
	// Installed before anything starts, so an early signal still ends in an
	// orderly shutdown rather than killing the process mid-start-up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, stop, cfg, logger, stderr); err != nil {
		fmt.Fprintf(stderr, "keeld: %v\n", err)
		return 1
	}
	return 0
}

// serve starts the replica and the HTTP server and blocks until ctx is done
// or the HTTP server fails. stop restores default signal handling, so a
// second Ctrl-C during shutdown kills the process.
func serve(ctx context.Context, stop func(), cfg config, logger *slog.Logger, banner io.Writer) error {
	if err := os.MkdirAll(cfg.RaftDir(), 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := bindClusterID(cfg); err != nil {
		return err
	}
	// Bind HTTP first: it is the cheapest thing to fail, and a taken port
	// should not leave a half-started replica behind.
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on --http %s: %w", cfg.HTTPAddr, err)
	}
	defer ln.Close()

	host.UseSlog(slog.New(demoteRoutine(logger.Handler())), cfg.LogLevel)
	defer startPprof(logger)()
	disk, err := newDiskGuard(cfg, logger, banner)
	if err != nil {
		return err
	}
	defer disk.close()
	host.OnFatal(disk.onDragonboatFatal)
	defer host.OnFatal(nil)
	newFactory, err := factoryFunc(cfg, logger)
	if err != nil {
		return err
	}
	// The NodeHost's events tell DELETE .../members/{own ID} that the
	// removal was applied (selfremove.go).
	dels := newDeletions()
	kc := host.Config{RootDir: cfg.SMDir(), Logger: logger, SnapshotStreamBytesPerSecond: cfg.SnapshotRateMiB << 20}
	// Keel's Pebble runs on the guard's ENOSPC handler too, and a received
	// snapshot must leave the reserve free.
	kc.Engine.FS = pebblevfs.OnDiskFull(pebblevfs.Default, disk.onPebbleFull)
	kc.SnapshotReserveBytes = disk.reserve
	// Dragonboat's workers also step every shard on a period of their own;
	// ten ticks, not 200 ms, once the tick is long (host/reload.go).
	host.SetNodeReloadInterval(host.NodeReloadForRTT(cfg.rtt()))
	// The Host orders the lifetimes: shared resources, then the NodeHost;
	// on the way out the NodeHost (and every state machine) closes first.
	h, err := host.Open(host.Options{
		NodeHostDir: cfg.RaftDir(),
		RaftAddress: cfg.RaftAddr,
		Keel:        kc,
		// Dragonboat ticks every shard every tick: many shards, longer tick.
		RTTMillisecond: cfg.rtt(),
		Configure: func(nhc *dbconfig.NodeHostConfig) {
			nhc.DeploymentID = host.DeploymentID(cfg.ClusterID)
			nhc.Expert.FS = host.DiskFullFS(lnivfs.Default, disk)
			cfg.Security.applyRaftTLS(nhc)
			nhc.SystemEventListener = dels
		},
		NewFactory: newFactory,
	})
	if err != nil {
		hint := ""
		// Dragonboat's sentinel is internal; its text is stable.
		if strings.Contains(err.Error(), "not the owner of the data directory") {
			hint = " (the data directory was created with another --raft-addr)"
		}
		if strings.Contains(err.Error(), "failed to lock data directory") {
			return fmt.Errorf("another keeld holds %s (its data directory is locked): %w", cfg.DataDir, err)
		}
		return fmt.Errorf("start Raft node host at %s in %s: %w%s", cfg.RaftAddr, cfg.RaftDir(), err, hint)
	}
	defer h.Close()
	nh, factory := h.NodeHost(), h.Factory()
	// Dragonboat panics when Close is called twice; Host.Close is
	// idempotent.
	closeNH := func() { _ = h.Close() }

	addJoinedReplicas(nh, &cfg, logger)
	if err := startReplicas(nh, factory, &cfg, logger); err != nil {
		return err
	}
	disk.attach(nh)
	svc, err := startServices(nh, factory, cfg, logger)
	if err != nil {
		return err
	}
	defer svc.stop()

	srv := newServer(nh, factory, svc, cfg, logger)
	srv.disk = disk
	srv.removeReplica = h.RemoveReplica
	srv.deletions = dels
	srv.metrics.reg.MustRegister(disk)
	// Connection cap and TLS wrap the listener; the token check runs before
	// any handler, so a refused request reads and changes nothing.
	warnOpenAPI(cfg.Security, cfg.HTTPAddr, logger)
	hln, err := cfg.Security.httpListener(ln)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           requireToken(cfg.Security.Token, srv),
		ReadHeaderTimeout: 5 * time.Second,
		// Bodies are at most maxBodyBytes; 30 s covers a slow client.
		ReadTimeout: 30 * time.Second,
		// Longer than any request's own deadline (requestTimeout) so a
		// timed-out proposal still gets its 503 written.
		WriteTimeout:   2*requestTimeout + 5*time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ConnState:      hln.ConnState,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(hln) }()
	scheme := "http"
	if cfg.Security.HTTPTLSCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(banner, "keeld: shard %d replica %d serving %s://%s (raft %s, data %s)\n",
		cfg.ShardID, cfg.ReplicaID, scheme, ln.Addr(), cfg.RaftAddr, cfg.DataDir)

	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	stop()
	fmt.Fprintln(banner, "keeld: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		logger.Warn("http shutdown", "err", err)
	}
	svc.stop()
	closeNH()
	return nil
}

// setMemoryLimit applies --go-memory-limit unless GOMEMLIMIT is set: the
// environment is Go's own knob and an operator who set it meant it.
func setMemoryLimit(mib int64, logger *slog.Logger) {
	if mib == 0 || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(mib << 20)
	logger.Debug("go memory limit", "mib", mib)
}

// factoryFunc returns how the Host builds its state machine factory:
// Keel's own, or the one a storage plugin (--sm-plugin) provides, so the
// shared resources live inside the plugin's copy of Keel.
func factoryFunc(cfg config, logger *slog.Logger) (func(host.Config) (*host.Factory, error), error) {
	if cfg.SMPlugin == "" {
		return host.NewFactory, nil
	}
	desc, err := storageplugin.Load(cfg.SMPlugin)
	if err != nil {
		return nil, err
	}
	logger.Info("loaded storage plugin", "path", cfg.SMPlugin, "keel_version", desc.KeelVersion, "api", desc.APIVersion)
	return desc.NewFactory, nil
}

// startReplicas starts every replica placed on this process. A replica
// already bootstrapped in the data directory restarts with no member list,
// so a restart works whatever --members, --join or the shard map say;
// Dragonboat keeps the membership in its log.
//
// A replica that was removed from its shard on this process (DELETE
// .../members/{its ID} here, which deletes its data) is left out of the
// placement with a warning: Dragonboat marks its directory removed and
// refuses to start it (ErrReplicaRemoved), and a map or --members that
// still names it must not keep the process's other replicas down. When
// nothing is left to run, the start fails.
func startReplicas(nh *dragonboat.NodeHost, f *host.Factory, cfg *config, logger *slog.Logger) error {
	// One data directory holds one replica of a shard: starting another
	// replica ID here would bootstrap a second, unrelated member beside it.
	if info := nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{}); info != nil {
		for _, li := range info.LogInfo {
			for _, p := range cfg.Sharding.Placement {
				if li.ShardID == p.ShardID && li.ReplicaID != p.ReplicaID {
					return fmt.Errorf("%s holds replica %d of shard %d, not replica %d: use its own --replica-id or another --data-dir",
						cfg.DataDir, li.ReplicaID, li.ShardID, p.ReplicaID)
				}
			}
		}
	}
	restarted := 0
	var started []placed
	for _, p := range cfg.Sharding.Placement {
		if nh.HasNodeInfo(p.ShardID, p.ReplicaID) {
			restarted++
		}
		err := startReplica(nh, f, *cfg, p, cfg.Join, logger)
		if errors.Is(err, dragonboat.ErrReplicaRemoved) {
			logger.Warn("not starting a replica removed from its shard on this process; take the shard off this host in the shard map", "shard", p.ShardID, "replica", p.ReplicaID)
			continue
		}
		if err != nil {
			return err
		}
		started = append(started, p)
	}
	if len(started) == 0 {
		return fmt.Errorf("every replica placed on this process was removed from its shard here (%s): start a new replica with a new ID and --join in another --data-dir, or take the shards off this host in the shard map", cfg.DataDir)
	}
	cfg.Sharding.Placement, cfg.ShardID = started, started[0].ShardID
	if restarted > 0 {
		logger.Info("restarted bootstrapped replicas; --members, --join and the shard map are ignored for them", "replicas", restarted)
	}
	return nil
}

// startReplica starts replica p: restarted from its data when the data
// directory holds it, else joining (join) or bootstrapped with p.Members.
func startReplica(nh *dragonboat.NodeHost, f *host.Factory, cfg config, p placed, join bool, logger *slog.Logger) error {
	sc := host.ShardConfig(p.ShardID, p.ReplicaID)
	cfg.schedulerConfigFor(p.ShardID, logger).ApplyTo(&sc)
	// --quiesce: idle shards go quiet (host.ShardConfig says the cost).
	sc.Quiesce = cfg.Quiesce
	if cfg.LogCompaction {
		// Only where a Compactor runs: it then reclaims LogDB space itself.
		logcompact.Configure(&sc)
	}
	var members map[uint64]dragonboat.Target
	if nh.HasNodeInfo(p.ShardID, p.ReplicaID) {
		join = false
	} else if !join {
		members = make(map[uint64]dragonboat.Target, len(p.Members))
		for id, addr := range p.Members {
			members[id] = addr
		}
	}
	if err := nh.StartOnDiskReplica(members, join, f.Create, sc); err != nil {
		return fmt.Errorf("start replica %d of shard %d: %w", p.ReplicaID, p.ShardID, err)
	}
	return nil
}

// addJoinedReplicas adds to the placement every replica of this host that
// the data directory holds but the shard map does not place here: one
// joined at runtime (POST /admin/shards/{id}/join) before the map was
// updated. It restarts from its data like any other; without this it
// would stay down until the map named it.
func addJoinedReplicas(nh *dragonboat.NodeHost, cfg *config, logger *slog.Logger) {
	s := &cfg.Sharding
	if s.Map == nil {
		return
	}
	info := nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{})
	if info == nil {
		return
	}
	have := map[uint64]bool{}
	for _, p := range s.Placement {
		have[p.ShardID] = true
	}
	for _, li := range info.LogInfo {
		if have[li.ShardID] || li.ReplicaID != cfg.ReplicaID || li.ShardID == 0 || li.ShardID > s.Shards {
			continue
		}
		have[li.ShardID] = true
		s.Placement = append(s.Placement, placed{ShardID: li.ShardID, ReplicaID: li.ReplicaID})
		logger.Info("restarting a replica joined at runtime that the shard map does not place here yet", "shard", li.ShardID, "replica", li.ReplicaID)
	}
	sort.Slice(s.Placement, func(i, j int) bool { return s.Placement[i].ShardID < s.Placement[j].ShardID })
}
