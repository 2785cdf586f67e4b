// Command keelso is Keel built as a Go storage plugin. Build it with
//
//	go build -buildmode=plugin -o keel.so ./plugin/keelso
//
// (or `make plugin`) and load it with plugin.Load. It exports one symbol,
// KeelPlugin, a plugin.Descriptor. The host and the plugin must be built by
// the same Go toolchain, with the same build flags and the same version of
// every package they share (Keel, Dragonboat, Pebble, ...).
package main

import "github.com/keel-db/keel/plugin"

// KeelPlugin is the handshake the host looks up; see plugin.Descriptor.
var KeelPlugin = plugin.NewDescriptor()

func main() {}
