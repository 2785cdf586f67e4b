package host

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// MaxClusterNameLen bounds a cluster name (CheckClusterName).
const MaxClusterNameLen = 64

// DeploymentID is the Dragonboat deployment ID (NodeHostConfig.DeploymentID)
// of the cluster called name: the first 8 bytes of SHA-256(name), read
// big-endian, with the top bit set. The top bit keeps it away from 0 and
// from 1, the ID Dragonboat uses when none is set, so a Keel cluster never
// shares the default with an unconfigured Dragonboat program.
//
// The ID separates clusters, nothing more: every batch carries it in clear
// text, and anyone who knows or sees the name can send with it. Mutual TLS
// is what keeps strangers out.
func DeploymentID(name string) uint64 {
	sum := sha256.Sum256([]byte(name))
	return binary.BigEndian.Uint64(sum[:8]) | 1<<63
}

// CheckClusterName accepts 1 to MaxClusterNameLen characters from
// [A-Za-z0-9._-], so a name is safe in a file, a log line and a flag.
func CheckClusterName(name string) error {
	if name == "" || len(name) > MaxClusterNameLen {
		return fmt.Errorf("%w: cluster name must be 1 to %d characters", ErrConfig, MaxClusterNameLen)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("%w: cluster name %q: only letters, digits, '.', '_' and '-'", ErrConfig, name)
		}
	}
	return nil
}
