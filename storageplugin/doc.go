// Package storageplugin is the handshake that lets a host load Keel as a Go
// plugin (a .so built with -buildmode=plugin) instead of linking it.
//
// A plugin's main package (storageplugin/keelso) exports one symbol,
// KeelPlugin, a Descriptor: the handshake's APIVersion, the Keel version,
// and constructors for the state-machine factory (typed host.Config or its
// JSON form). Load opens a .so, checks the symbol and the API version, and
// classifies every way a load can fail (missing file, not a plugin, wrong
// symbol, API mismatch, host and plugin built from different package
// versions) as a sentinel in errors.go; it never lets a Go runtime panic
// through.
//
// A Go plugin opens once per process, and only in a host built with the same
// toolchain, build flags and versions of every package the two share.
//
// # Concurrency
//
// Load may be called from any goroutine; Go's plugin loader serialises
// opens.
package storageplugin
