// Command nosymbol is a Go plugin that exports no Keel descriptor; the
// loader tests use it as "the wrong symbol".
package main

// Something is exported, but it is not storageplugin.Descriptor.
var Something = 42

func main() {}
