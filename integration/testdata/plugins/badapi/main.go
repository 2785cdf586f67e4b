// Command badapi is a Go plugin exporting a Keel descriptor with an API
// version no host speaks; the loader tests use it for the version check.
package main

import "github.com/keel-db/keel/storageplugin"

// KeelPlugin claims a future handshake version.
var KeelPlugin = func() storageplugin.Descriptor {
	d := storageplugin.NewDescriptor()
	d.APIVersion = 999
	return d
}()

func main() {}
