// Command keelso is Keel built as a Go storage plugin. Build it with
//
//	go build -buildmode=plugin -o keel.so ./storageplugin/keelso
//
// (or `make plugin`) and load it with storageplugin.Load. It exports one symbol,
// KeelPlugin, a storageplugin.Descriptor. The host and the plugin must be built by
// the same Go toolchain, with the same build flags and the same version of
// every package they share (Keel, Dragonboat, Pebble, ...).
package main

import "github.com/keel-db/keel/storageplugin"

// KeelPlugin is the handshake the host looks up; see storageplugin.Descriptor.
var KeelPlugin = storageplugin.NewDescriptor()

func main() {}
