package host

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname, see dragonboatTCP

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"golang.org/x/time/rate"
)

// PeerGuard is the Raft transport of every NodeHost configured by
// NodeHostConfig: Dragonboat's own TCP transport (same wire format, same
// mutual TLS) with a filter in front of each message batch it receives, so
// that no batch a peer can send makes Dragonboat panic.
//
// Dragonboat's receive path (internal/transport.Transport.handleRequest)
// drops a batch from another deployment, then registers the batch's
// SourceAddress for every (shard, sender) pair it names in its node
// registry, then hands the messages to the Raft nodes. The registry panics
// ("inconsistent target") when a pair it knows arrives from another address
// and ("invalid target") when the address is malformed; the message handler
// panics when a message has no recipient. Each would end the process. The
// guard, per batch, in this order:
//
//  1. drops a batch whose deployment ID is not this NodeHost's (another
//     cluster; Dragonboat would drop it too, logging each one);
//  2. drops a batch whose SourceAddress is malformed;
//  3. drops each message that has no recipient (To 0) or is an
//     InstallSnapshot (that type is built locally from received snapshot
//     chunks and never travels in a batch), and, once Attach was called,
//     each message for a shard this NodeHost does not host (Dragonboat
//     would ignore it after registering its sender's address, which would
//     let a stray peer claim replica IDs ahead of a membership change),
//     and each message from a replica ID this NodeHost's view of the
//     shard's membership does not hold (a stranger claiming an ID not yet
//     added, whose registered address would make the later AddReplica of
//     that ID panic on every replica; or a removed replica);
//  4. drops a Replicate for a replica while a snapshot stream for it is
//     still being received here (a normal catch-up, not a hostile peer:
//     see inboundStreams; counted as HeldForSnapshot, not logged);
//  5. passes the rest to Dragonboat and recovers the registry's
//     "inconsistent target" panic: the registry checks every message
//     before any reaches a Raft node, so the whole batch is dropped
//     unprocessed and the registry keeps the member's address.
//
// Every dropped message is counted by reason (Stats) and logged as a
// warning at most once per reason every ten seconds.
//
// Why not a registry of Keel's (Expert.NodeRegistryFactory)? Setting it
// switches Dragonboat to addressing replicas by NodeHost ID: targets must
// then be NodeHost IDs (StartReplica with a host:port member fails with
// "invalid target node ID") and batches carry the sender's NodeHost ID as
// their source. And the registry's Add returns nothing, so refusing there
// would still let the message reach the Raft node.
//
// A member's address cannot change in Dragonboat: a replica ID keeps the
// address it was added with until it is removed, and a removed ID is never
// added again. Moving a replica is adding a new replica ID at the new
// address and removing the old one; the guard accepts the new ID's
// messages as soon as the membership change is applied. A process claiming
// an existing member's ID from another address (a replica restarted on an
// empty data directory at a new port, say) is dropped and counted for as
// long as it runs.
//
// What the guard is not: authentication. The deployment ID and the source
// address are fields the sender fills in; a peer that copies a member's
// address and the cluster's deployment ID is taken for that member, and
// Raft trusts its members (a forged heartbeat can still end a replica).
// Only mutual TLS (NodeHostConfig.MutualTLS) keeps such peers out.
//
// A PeerGuard serves one NodeHost; it is safe for concurrent use.
type PeerGuard struct {
	// deploymentID is the NodeHost's, set by Create before the transport
	// starts receiving.
	deploymentID atomic.Uint64
	// nh, once Attach set it, tells which shards this NodeHost hosts.
	nh atomic.Pointer[dragonboat.NodeHost]

	dropped [numDropReasons]atomic.Uint64
	// warn rate-limits the warning per reason (each guards itself).
	warn [numDropReasons]rate.Sometimes

	// membersMu guards members and membersAt: per hosted shard, the
	// replica IDs this NodeHost's view of the membership holds, read from
	// GetNodeHostInfo at most every membersRefresh.
	membersMu sync.Mutex
	members   map[uint64]map[uint64]bool
	membersAt time.Time

	// streams tracks the snapshot streams being received, to hold back
	// their replicas' Replicate messages (snapstream.go).
	streams inboundStreams
}

// membersRefresh bounds how often the guard rereads the membership when a
// message comes from a replica ID it does not know: a member added a
// moment ago is accepted as soon as this NodeHost applied the change.
const membersRefresh = 100 * time.Millisecond

// dropReason classifies a dropped message.
type dropReason int

const (
	dropAddressMismatch dropReason = iota
	dropClusterID
	dropMalformed
	dropForeignShard
	dropNonMember
	numDropReasons
)

// peerWarnInterval is the least time between two warnings of one reason.
const peerWarnInterval = 10 * time.Second

var dropWhat = [numDropReasons]string{
	dropAddressMismatch: "a known member's replica ID from another address",
	dropClusterID:       "another cluster (deployment ID)",
	dropMalformed:       "malformed",
	dropForeignShard:    "a shard this node host does not host",
	dropNonMember:       "a replica ID that is not a member of its shard",
}

// PeerGuardStats counts the messages a PeerGuard dropped, by reason.
type PeerGuardStats struct {
	// AddressMismatch: the sender claimed a replica ID that Dragonboat
	// knows at another address.
	AddressMismatch uint64
	// ClusterID: the batch carried another deployment ID.
	ClusterID uint64
	// Malformed: no recipient, an InstallSnapshot in a batch, or a
	// malformed source address.
	Malformed uint64
	// ForeignShard: the message was for a shard this NodeHost does not
	// host (counted only after Attach).
	ForeignShard uint64
	// NonMember: the sender's replica ID is not in this NodeHost's view of
	// the shard's membership (a stranger claiming an ID not yet added, or a
	// removed replica). A shard whose membership this NodeHost does not
	// know yet (a joiner) accepts every sender.
	NonMember uint64
	// HeldForSnapshot: a Replicate for a replica while this NodeHost was
	// still receiving a snapshot stream for it (not an attack: the leader
	// resends it; see inboundStreams in snapstream.go). Without the hold,
	// the replica would reject it and the leader would stream the whole
	// snapshot again.
	HeldForSnapshot uint64
	// StagedWhileReceiving counts snapshot streams whose image was built
	// while they arrived and handed to Raft (snaptee.go); StageFailed the
	// streams whose staging failed (they take Dragonboat's ordinary path);
	// StagingBytesSkipped the bytes of Dragonboat's staging files cut
	// before they were written back. StagingBytesNotWritten are the bytes
	// of those files never written at all (DiskFullFS drops them as
	// Dragonboat writes, stagingfs.go); StagingRefused the streams refused
	// at their end because their staging file had holes and the image was
	// not staged (the leader sends them again, written in full).
	StagedWhileReceiving   uint64
	StageFailed            uint64
	StagingBytesSkipped    uint64
	StagingBytesNotWritten uint64
	StagingRefused         uint64
}

var _ config.TransportFactory = (*PeerGuard)(nil)

// NewPeerGuard returns a guard for one NodeHost. NodeHostConfig installs
// one; a host building its own NodeHostConfig sets Expert.TransportFactory
// to it.
func NewPeerGuard() *PeerGuard {
	g := &PeerGuard{}
	for i := range g.warn {
		g.warn[i].Interval = peerWarnInterval
	}
	return g
}

// PeerGuardOf returns the guard installed in c, or nil.
func PeerGuardOf(c config.NodeHostConfig) *PeerGuard {
	g, _ := c.Expert.TransportFactory.(*PeerGuard)
	return g
}

// Attach lets the guard drop messages for shards nh does not host. Call it
// right after dragonboat.NewNodeHost returns, before starting replicas.
func (g *PeerGuard) Attach(nh *dragonboat.NodeHost) { g.nh.Store(nh) }

// AttachFactory makes the guard stage each received snapshot's image while
// its stream arrives, with the state machines f created (snaptee.go).
func (g *PeerGuard) AttachFactory(f *Factory) {
	lookup := stagerLookup(func(shardID, replicaID uint64) imageStager {
		if s := f.StateMachine(shardID, replicaID); s != nil {
			return s
		}
		return nil
	})
	g.streams.stagers.Store(&lookup)
}

// Stats returns the drop counters.
func (g *PeerGuard) Stats() PeerGuardStats {
	return PeerGuardStats{
		AddressMismatch: g.dropped[dropAddressMismatch].Load(),
		ClusterID:       g.dropped[dropClusterID].Load(),
		Malformed:       g.dropped[dropMalformed].Load(),
		ForeignShard:    g.dropped[dropForeignShard].Load(),
		NonMember:       g.dropped[dropNonMember].Load(),
		HeldForSnapshot: g.streams.held.Load(),

		StagedWhileReceiving: g.streams.teed.Load(),
		StageFailed:          g.streams.teeFailed.Load(),
		StagingBytesSkipped:  g.streams.shrunk.Load(),

		StagingBytesNotWritten: g.streams.notWritten.Load(),
		StagingRefused:         g.streams.holeyRefused.Load(),
	}
}

// dragonboatTCP is Dragonboat's TCP transport, which Dragonboat keeps in an
// internal package and uses whenever Expert.TransportFactory is nil. The
// guard must wrap the handler that transport calls, and no exported API
// reaches it, so it is linked by name. The signature is the one at the
// Dragonboat version in go.mod (internal/transport/tcp.go); if Dragonboat
// renames the function the build fails at link time, and host's tests run
// NodeHosts through it.
//
//go:linkname dragonboatTCP github.com/lni/dragonboat/v4/internal/transport.NewTCPTransport
func dragonboatTCP(config.NodeHostConfig, raftio.MessageHandler, raftio.ChunkHandler) raftio.ITransport

// Create is config.TransportFactory's: Dragonboat's TCP transport with the
// guard in front of its message handler. Snapshot chunks pass unchanged
// (Dragonboat checks their deployment ID itself and they do not register
// addresses); the guard only notes which streams are in flight, to hold
// back their replicas' Replicate messages until each stream is handed to
// Raft (snapstream.go). Outgoing message connections survive an outage of
// their peer, so a restarted peer is reached within redialInterval rather
// than after Dragonboat's circuit breaker lets a new dial through
// (redial.go).
func (g *PeerGuard) Create(nhc config.NodeHostConfig, handler raftio.MessageHandler, chunks raftio.ChunkHandler) raftio.ITransport {
	g.deploymentID.Store(nhc.GetDeploymentID())
	g.streams.nodeHostDir = nhc.NodeHostDir
	// coalesce: message batches go out in one write (sendcoalesce.go)
	// and come in through a buffer (recvbuffer.go);
	// redial: a message connection outlives its peer's outage (redial.go).
	guarded, streams := func(b pb.MessageBatch) { g.handle(handler, b) }, g.streams.wrap(chunks)
	return newRedialTransport(coalesce(nhc, dragonboatTCP(nhc, guarded, streams), guarded, streams))
}

// Validate is config.TransportFactory's address check, the one Dragonboat
// applies without a custom transport.
func (g *PeerGuard) Validate(addr string) bool { return validAddress(addr) }

// handle filters b and passes what is left to next (Dragonboat's
// handleRequest), on the transport's connection goroutine.
func (g *PeerGuard) handle(next raftio.MessageHandler, b pb.MessageBatch) {
	if b.DeploymentId != g.deploymentID.Load() {
		g.drop(dropClusterID, len(b.Requests), "from %s, deployment ID %d", b.SourceAddress, b.DeploymentId)
		return
	}
	if b.SourceAddress != "" && !g.Validate(b.SourceAddress) {
		g.drop(dropMalformed, len(b.Requests), "source address %q", b.SourceAddress)
		return
	}
	// The batch was decoded for this call alone, so filtering in place is
	// safe.
	kept := b.Requests[:0]
	for _, m := range b.Requests {
		switch {
		case m.To == 0 || m.Type == pb.InstallSnapshot:
			g.drop(dropMalformed, 1, "%s for replica %d of shard %d from %s", m.Type, m.To, m.ShardID, b.SourceAddress)
		case !g.hosts(m.ShardID):
			g.drop(dropForeignShard, 1, "%s for shard %d from %s", m.Type, m.ShardID, b.SourceAddress)
		case !g.isMember(m.ShardID, m.From):
			g.drop(dropNonMember, 1, "%s for shard %d from replica %d at %s", m.Type, m.ShardID, m.From, b.SourceAddress)
		case m.Type == pb.Replicate && g.streams.holds(m.ShardID, m.To):
			// Not logged: it is the normal course of a catch-up.
			g.streams.held.Add(1)
		default:
			kept = append(kept, m)
		}
	}
	if len(kept) == 0 {
		return
	}
	b.Requests = kept
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if f, ok := r.(*dragonboatFatal); ok && f.addressMismatch() {
			g.drop(dropAddressMismatch, len(b.Requests), "%s (known:claimed); batch from %s dropped", f.msg, b.SourceAddress)
			return
		}
		panic(r)
	}()
	next(b)
}

// hosts reports whether the attached NodeHost hosts shardID (true before
// Attach).
func (g *PeerGuard) hosts(shardID uint64) bool {
	nh := g.nh.Load()
	if nh == nil {
		return true
	}
	_, _, _, err := nh.GetLeaderID(shardID)
	return !errors.Is(err, dragonboat.ErrShardNotFound)
}

// isMember reports whether from is in this NodeHost's view of shard's
// membership. Registering a stranger's address for a replica ID that is
// not a member yet would make the later AddReplica of that ID, at its real
// address, panic on every replica. True before Attach, and for a shard
// whose membership is not known here yet (a replica still joining).
func (g *PeerGuard) isMember(shard, from uint64) bool {
	nh := g.nh.Load()
	if nh == nil {
		return true
	}
	g.membersMu.Lock()
	defer g.membersMu.Unlock()
	known, ok := g.members[shard]
	if ok && known[from] {
		return true
	}
	if time.Since(g.membersAt) >= membersRefresh {
		g.refreshMembersLocked(nh)
		known, ok = g.members[shard]
	}
	return !ok || len(known) == 0 || known[from]
}

func (g *PeerGuard) refreshMembersLocked(nh *dragonboat.NodeHost) {
	g.membersAt = time.Now()
	info := nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if info == nil {
		return
	}
	m := make(map[uint64]map[uint64]bool, len(info.ShardInfoList))
	for _, si := range info.ShardInfoList {
		ids := make(map[uint64]bool, len(si.Replicas))
		for id := range si.Replicas {
			ids[id] = true
		}
		m[si.ShardID] = ids
	}
	g.members = m
}

// drop counts n dropped messages and warns, rate-limited.
func (g *PeerGuard) drop(r dropReason, n int, format string, args ...any) {
	total := g.dropped[r].Add(uint64(n))
	g.warn[r].Do(func() {
		currentSlog().Warn("dropped Raft messages from "+dropWhat[r],
			"detail", fmt.Sprintf(format, args...), "dropped_total", total, "pkg", "keel-peerguard")
	})
}

// dragonboatFatal is the panic value of Dragonboat's Panicf under UseSlog.
type dragonboatFatal struct {
	pkg, msg string
}

func (f *dragonboatFatal) Error() string { return f.msg }

// addressMismatch reports whether f is the node registry's refusal of a
// known replica at another address (internal/registry/registry.go, Add).
func (f *dragonboatFatal) addressMismatch() bool {
	return f.pkg == "registry" && strings.HasPrefix(f.msg, "inconsistent target for ")
}
