package storageplugin

// APIVersion is the version of the storage-plugin handshake (Descriptor).
// It changes whenever Descriptor's fields or their meaning change; a loader
// refuses a plugin whose APIVersion differs from its own.
const APIVersion = 1
