//go:build keel_build_variant

package storageplugin

// buildVariant exists only under the keel_build_variant tag. Tests build a
// plugin with the tag so that its copy of this package differs from the
// host's, which is how a real version skew between host and plugin looks to
// Go's plugin loader.
var buildVariant = "variant"

var _ = buildVariant
