package host

import (
	"sync"
	"time"
	_ "unsafe" // go:linkname

	_ "github.com/lni/dragonboat/v4" // dragonboatNodeReloadInterval lives there
)

// Dragonboat's step, commit and apply workers each run a ticker of their
// own (engine.go nodeReloadInterval, from the soft setting
// NodeReloadMillisecond: 200 ms, settable otherwise only by a
// dragonboat-soft-settings.json in the process's working directory). On
// every period each worker reloads its shards and steps or applies every
// one of them, whether or not any has work: a fallback behind the
// per-shard work notifications, which carry all the work. The step pass
// repeats what the tick already does (Dragonboat's tick worker marks every
// shard ready to step on every tick), so with a 200 ms tick a host runs
// two full passes every 200 ms. At 1,000 idle quiesced shards those passes
// were about a quarter of keeld's idle CPU: with 2 s, keeld at 1,000
// shards idled at 4.3-4.5% of a core per process against 5.7-5.9%
// (bench/idle, two alternating rounds of three processes; bench/README.md,
// "Dragonboat's reload period").
//
//go:linkname dragonboatNodeReloadInterval github.com/lni/dragonboat/v4.nodeReloadInterval
var dragonboatNodeReloadInterval time.Duration

// reloadMu serialises SetNodeReloadInterval (Dragonboat reads the
// variable without a lock when a NodeHost starts its workers).
var reloadMu sync.Mutex

// DefaultNodeReload is Dragonboat's reload period.
const DefaultNodeReload = 200 * time.Millisecond

// NodeReloadTicks is Keel's rule for the reload period: this many ticks,
// never less than DefaultNodeReload. A host at Keel's 20 ms tick keeps
// Dragonboat's 200 ms; one that raised its tick for many shards
// (RTTForShards: 200 ms at 1,000) gets 2 s.
const NodeReloadTicks = 10

// NodeReloadForRTT returns the reload period Keel recommends for a
// NodeHost ticking every rttMillisecond.
func NodeReloadForRTT(rttMillisecond uint64) time.Duration {
	return max(DefaultNodeReload, time.Duration(rttMillisecond)*NodeReloadTicks*time.Millisecond)
}

// SetNodeReloadInterval sets Dragonboat's reload period (see above) for
// every NodeHost the process starts afterwards. It is process-wide: call it
// once, before the first NodeHost starts, as keeld does; a NodeHost
// already running keeps the period it started with. d <= 0 means
// DefaultNodeReload.
func SetNodeReloadInterval(d time.Duration) {
	if d <= 0 {
		d = DefaultNodeReload
	}
	reloadMu.Lock()
	defer reloadMu.Unlock()
	dragonboatNodeReloadInterval = d
}

// nodeReloadInterval returns the period NodeHosts start with now.
func nodeReloadInterval() time.Duration {
	reloadMu.Lock()
	defer reloadMu.Unlock()
	return dragonboatNodeReloadInterval
}
