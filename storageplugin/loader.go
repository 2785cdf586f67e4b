package storageplugin

import (
	"github.com/keel-db/keel/host"

	"fmt"
	"os"
	goplugin "plugin"
	"strings"
)

// Load opens the Keel storage plugin at path, checks its handshake and
// returns its Descriptor. Every failure is an error naming the file and the
// cause; Load never lets a Go runtime panic through.
//
// A Go plugin can be opened only once per process, and only by a host built
// with the same Go toolchain, the same build flags (-race, -trimpath, tags)
// and the same version of every package the two share. Go refuses anything
// else with "plugin was built with a different version of package X", which
// Load reports as ErrPluginBuildMismatch.
func Load(path string) (d *Descriptor, err error) {
	defer func() {
		if r := recover(); r != nil {
			d, err = nil, fmt.Errorf("keel: load plugin %s: %v", path, r)
		}
	}()
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPluginNotFound, path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%w: %s is a directory", ErrPluginNotFound, path)
	}
	p, err := goplugin.Open(path)
	if err != nil {
		return nil, classifyOpenError(path, err)
	}
	sym, err := p.Lookup(SymbolName)
	if err != nil {
		return nil, fmt.Errorf("%w: %s has no symbol %s (is it a Keel plugin?)", ErrPluginSymbol, path, SymbolName)
	}
	desc, ok := sym.(*Descriptor)
	if !ok {
		return nil, fmt.Errorf("%w: %s exports %s as %T, want *storageplugin.Descriptor", ErrPluginSymbol, path, SymbolName, sym)
	}
	if desc.APIVersion != APIVersion {
		return nil, fmt.Errorf("%w: %s speaks plugin API %d (Keel %s), this host speaks %d (Keel %s)",
			ErrPluginAPIVersion, path, desc.APIVersion, desc.KeelVersion, APIVersion, host.Version)
	}
	if desc.New == nil || desc.NewFactory == nil || desc.NewFromJSON == nil {
		return nil, fmt.Errorf("%w: %s has an incomplete descriptor", ErrPluginSymbol, path)
	}
	return desc, nil
}

func classifyOpenError(path string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "different version of package"):
		return fmt.Errorf("%w: %s: %v. Host and plugin must be built by the same Go toolchain, "+
			"with the same build flags (-race, -trimpath, tags) and the same versions of every "+
			"shared module (go.sum): rebuild the plugin with the host's toolchain and go.mod",
			ErrPluginBuildMismatch, path, err)
	case strings.Contains(msg, "not implemented"):
		return fmt.Errorf("%w: %s: this host was built without cgo or on a platform without "+
			"plugin support: %v", ErrNotAPlugin, path, err)
	case strings.Contains(msg, "ELF") || strings.Contains(msg, "file too short") ||
		strings.Contains(msg, "cannot open shared object") || strings.Contains(msg, "no Go plugin"):
		return fmt.Errorf("%w: %s: %v", ErrNotAPlugin, path, err)
	default:
		return fmt.Errorf("%w: %s: %v", ErrNotAPlugin, path, err)
	}
}
