package plugin

import "errors"

var (
	// ErrInvalidCommand is returned when the state machine rejected a
	// command as malformed or over a limit (result code CodeInvalidCommand).
	ErrInvalidCommand = errors.New("keel: command rejected as invalid")
	// ErrUnexpectedResult is returned when a result carries a code the
	// client does not know, e.g. from a newer state machine.
	ErrUnexpectedResult = errors.New("keel: unexpected result from the state machine")
	// ErrConfig is returned for an unusable Config.
	ErrConfig = errors.New("keel: invalid config")
	// ErrBadSnapshot is returned by Import when the export directory fails
	// verification (incomplete, damaged, or its files disagree); nothing
	// was written.
	ErrBadSnapshot = errors.New("keel: exported snapshot fails verification")
	// ErrBatcherClosed is returned by a Batcher's writes after Close.
	ErrBatcherClosed = errors.New("keel: batcher closed")
)

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
