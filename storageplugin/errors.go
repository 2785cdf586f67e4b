package storageplugin

import "errors"

// Errors from Load. Each is wrapped with the plugin's path and the cause.
var (
	// ErrPluginNotFound: the plugin file does not exist or cannot be read.
	ErrPluginNotFound = errors.New("keel: storage plugin file not found")
	// ErrNotAPlugin: the file is not a Go plugin (-buildmode=plugin).
	ErrNotAPlugin = errors.New("keel: file is not a Go plugin")
	// ErrPluginSymbol: the plugin does not export a Keel Descriptor.
	ErrPluginSymbol = errors.New("keel: plugin does not export a Keel descriptor")
	// ErrPluginAPIVersion: the plugin speaks another handshake version.
	ErrPluginAPIVersion = errors.New("keel: plugin API version mismatch")
	// ErrPluginBuildMismatch: the plugin and the host were built from
	// different versions of a shared package, or with different toolchains
	// or build flags.
	ErrPluginBuildMismatch = errors.New("keel: plugin and host were built differently")
)
