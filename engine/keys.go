package engine

import (
	"encoding/binary"
	"fmt"
)

const (
	nsMeta byte = 0x00
	nsUser byte = 0x01
	// nsEnd is the first tag past user data; [nsUser, nsEnd) bounds it.
	nsEnd byte = 0x02

	// FormatVersion is the data format this package writes into meta/format.
	FormatVersion byte = 1
)

var (
	keyApplied  = []byte{nsMeta, 'm', 'a', 'p', 'p', 'l', 'i', 'e', 'd'}
	keyIdentity = []byte{nsMeta, 'm', 'i', 'd', 'e', 'n', 't', 'i', 't', 'y'}
	keyFormat   = []byte{nsMeta, 'm', 'f', 'o', 'r', 'm', 'a', 't'}

	userLower = []byte{nsUser}
	userUpper = []byte{nsEnd}
)

// userKey returns the Pebble key for user key k, appended to buf[:0].
func userKey(buf, k []byte) []byte {
	buf = append(buf[:0], nsUser)
	return append(buf, k...)
}

// lowerBound returns the Pebble key for an inclusive user-key lower bound;
// nil means the start of user data.
func lowerBound(k []byte) []byte {
	return userKey(make([]byte, 0, len(k)+1), k)
}

// upperBound returns the Pebble key for an exclusive user-key upper bound;
// nil means the end of user data.
func upperBound(k []byte) []byte {
	if k == nil {
		return userUpper
	}
	return userKey(make([]byte, 0, len(k)+1), k)
}

// Identity names the shard and replica an image belongs to.
type Identity struct {
	ShardID   uint64
	ReplicaID uint64
}

func (id Identity) String() string {
	return fmt.Sprintf("shard %d replica %d", id.ShardID, id.ReplicaID)
}

func encodeUint64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func decodeApplied(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: applied index record is %d bytes, want 8", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func encodeIdentity(id Identity) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], id.ShardID)
	binary.BigEndian.PutUint64(b[8:], id.ReplicaID)
	return b[:]
}

func decodeIdentity(v []byte) (Identity, error) {
	if len(v) != 16 {
		return Identity{}, fmt.Errorf("%w: identity record is %d bytes, want 16", ErrCorrupt, len(v))
	}
	return Identity{
		ShardID:   binary.BigEndian.Uint64(v[:8]),
		ReplicaID: binary.BigEndian.Uint64(v[8:]),
	}, nil
}
