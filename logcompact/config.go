package logcompact

import "github.com/lni/dragonboat/v4/config"

// Configure adjusts a replica's shard config for a Compactor: it turns off
// Dragonboat's automatic LogDB compactions (DisableAutoCompactions), so the
// Compactor issues each reclamation itself and measures what it freed.
// Call it only for replicas a Compactor serves: without one, LogDB space
// removed by a log compaction would come back only when LogDB's Pebble
// happens to compact, and the disk bound below would not hold.
func Configure(sc *config.Config) { sc.DisableAutoCompactions = true }
