package host

// Version is Keel's release version.
const Version = "0.1.0"
