package storageplugin

import (
	"github.com/keel-db/keel/host"

	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/keel-db/keel/engine"
	"github.com/lni/dragonboat/v4/statemachine"
)

// SymbolName is the name of the Descriptor variable a Keel storage plugin
// (.so) exports.
const SymbolName = "KeelPlugin"

// Descriptor is what a Keel storage plugin exports under SymbolName: the
// handshake between a host and a plugin built with -buildmode=plugin.
type Descriptor struct {
	// APIVersion must equal the host's APIVersion.
	APIVersion int
	// KeelVersion is the Keel release the plugin was built from.
	KeelVersion string
	// New builds the Dragonboat factory from a typed config.
	New func(host.Config) (statemachine.CreateOnDiskStateMachineFunc, error)
	// NewFactory builds a host.Factory, for hosts that also want to reach the
	// state machines it creates (status, metrics, log compaction).
	NewFactory func(host.Config) (*host.Factory, error)
	// NewFromJSON builds it from a JSON config (see JSONConfig), for hosts
	// that keep the storage engine's settings as opaque configuration.
	NewFromJSON func([]byte) (statemachine.CreateOnDiskStateMachineFunc, error)
}

// JSONConfig is the JSON form of host.Config accepted by Descriptor.NewFromJSON.
type JSONConfig struct {
	RootDir      string `json:"root_dir"`
	CacheSize    int64  `json:"cache_size,omitempty"`
	MemTableSize uint64 `json:"memtable_size,omitempty"`
	// SnapshotStreamBytesPerSecond is host.Config.SnapshotStreamBytesPerSecond.
	SnapshotStreamBytesPerSecond int64 `json:"snapshot_stream_bytes_per_second,omitempty"`
}

// NewDescriptor returns the Descriptor a plugin main package exports.
func NewDescriptor() Descriptor {
	return Descriptor{
		APIVersion:  APIVersion,
		KeelVersion: host.Version,
		New: func(cfg host.Config) (statemachine.CreateOnDiskStateMachineFunc, error) {
			f, err := host.NewFactory(cfg)
			if err != nil {
				return nil, err
			}
			return f.Create, nil
		},
		NewFactory: host.NewFactory,
		NewFromJSON: func(b []byte) (statemachine.CreateOnDiskStateMachineFunc, error) {
			var jc JSONConfig
			if err := json.Unmarshal(b, &jc); err != nil {
				return nil, fmt.Errorf("%w: plugin config: %v", host.ErrConfig, err)
			}
			f, err := host.NewFactory(host.Config{
				RootDir:                      jc.RootDir,
				Engine:                       engine.Options{CacheSize: jc.CacheSize, MemTableSize: jc.MemTableSize},
				Logger:                       slog.Default(),
				SnapshotStreamBytesPerSecond: jc.SnapshotStreamBytesPerSecond,
			})
			if err != nil {
				return nil, err
			}
			return f.Create, nil
		},
	}
}
