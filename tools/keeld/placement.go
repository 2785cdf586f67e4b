package main

import (
	"flag"
	"fmt"
)

// placed is one replica this process runs.
type placed struct {
	ShardID, ReplicaID uint64
	// Members is the shard's initial membership (replica ID to Raft
	// address); nil when joining.
	Members map[uint64]string
}

// shardingConfig is the sharding part of keeld's command line.
//
// Invariants after resolve: Shards >= 1 is the number of shards the
// keyspace is split into (shardmap.go's rule); Placement lists the replicas
// this process runs, at least one, in shard order; with a shard map,
// Map is set and every shard's hosts come from it.
type shardingConfig struct {
	Shards       uint64
	ShardMapFile string
	Map          *shardMap
	Placement    []placed
}

func addShardingFlags(fs *flag.FlagSet, s *shardingConfig) {
	fs.Uint64Var(&s.Shards, "shards", 1, "split the keyspace into N shards (IDs 1..N, by a hash of the key or its {hash tag}); every --members process hosts a replica of each. Fixed when the cluster is created")
	fs.StringVar(&s.ShardMapFile, "shard-map", "", "JSON file placing shards on processes (hosts and, per shard, the hosts holding its replicas); replaces --members, --shards, --shard-id and --replica-id")
}

// resolvePlacement works out which replicas this process runs, after the
// rest of the command line has been checked. set names the flags given.
func (c *config) resolvePlacement(set map[string]bool) error {
	s := &c.Sharding
	if s.ShardMapFile == "" {
		if s.Shards == 0 || s.Shards > 1<<16 {
			return fmt.Errorf("%w: --shards %d must be from 1 to %d", errUsage, s.Shards, 1<<16)
		}
		if s.Shards > 1 && c.ShardID != 1 {
			return fmt.Errorf("%w: --shards %d numbers the shards 1..%d; --shard-id goes with --shards 1 only", errUsage, s.Shards, s.Shards)
		}
		first, last := c.ShardID, c.ShardID
		if s.Shards > 1 {
			first, last = 1, s.Shards
		}
		for id := first; id <= last; id++ {
			s.Placement = append(s.Placement, placed{ShardID: id, ReplicaID: c.ReplicaID, Members: c.Members})
		}
		return nil
	}
	for _, f := range []string{"members", "join", "shards", "shard-id", "replica-id"} {
		if set[f] {
			return fmt.Errorf("%w: --shard-map replaces --%s: the map says which replicas run where", errUsage, f)
		}
	}
	m, err := loadShardMap(s.ShardMapFile)
	if err != nil {
		return err
	}
	self, ok := m.hostByRaftAddr(c.RaftAddr)
	if !ok {
		return fmt.Errorf("%w: --shard-map %s has no host with raft_addr %s (this process's --raft-addr)", errUsage, s.ShardMapFile, c.RaftAddr)
	}
	if !set["http"] {
		c.HTTPAddr = self.HTTPAddr
	}
	s.Map = m
	s.Shards = uint64(len(m.Shards))
	c.ReplicaID = self.ID
	c.Members = nil
	for _, id := range m.shardsOn(self.ID) {
		s.Placement = append(s.Placement, placed{ShardID: id, ReplicaID: self.ID, Members: m.members(id)})
	}
	if len(s.Placement) == 0 {
		return fmt.Errorf("%w: --shard-map %s places no shard on host %d (%s)", errUsage, s.ShardMapFile, self.ID, c.RaftAddr)
	}
	c.ShardID = s.Placement[0].ShardID
	return nil
}
