package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// View is a consistent read-only view of an Engine: all reads see the state
// at the moment NewView was called, including its applied index. It must be
// closed; it pins the Pebble files it reads until then.
type View struct {
	snap *pebble.Snapshot
}

// AppliedIndex is the applied index recorded with this view's data.
func (v *View) AppliedIndex() (uint64, error) { return readApplied(v.snap) }

// Get returns a copy of user key k's value, or ErrNotFound.
func (v *View) Get(k []byte) ([]byte, error) { return getCopy(v.snap, userKey(nil, k)) }

// Scan calls fn for each user key in [start, end) in order, stopping after
// limit keys (0 means no limit) or when fn returns false. A nil end means the
// end of user data. k and val are only valid during the call.
func (v *View) Scan(start, end []byte, limit int, fn func(k, val []byte) bool) error {
	if end != nil && bytes.Compare(start, end) >= 0 {
		return nil
	}
	it, err := v.snap.NewIter(&pebble.IterOptions{
		LowerBound: lowerBound(start),
		UpperBound: upperBound(end),
	})
	if err != nil {
		return fmt.Errorf("keel/engine: scan: %w", err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		val, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("keel/engine: scan: %w", err)
		}
		if !fn(it.Key()[1:], val) {
			break
		}
		n++
		if limit > 0 && n >= limit {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("keel/engine: scan: %w", err)
	}
	return nil
}

// Close releases the view.
func (v *View) Close() error { return v.snap.Close() }

// StateHash is a SHA-256 over every user key and value in order, each
// framed as uvarint(len(key)) key uvarint(len(value)) value, together with
// the applied index and key count of the same view. Two replicas at the same
// applied index must produce the same hash.
type StateHash struct {
	AppliedIndex uint64 `json:"applied_index"`
	Keys         uint64 `json:"keys"`
	Hash         string `json:"hash"`
}

// Hash computes the view's StateHash. progress, if not nil, is called with
// the bytes hashed so far every few MiB.
func (v *View) Hash(progress func(bytes uint64)) (StateHash, error) {
	applied, err := v.AppliedIndex()
	if err != nil {
		return StateHash{}, err
	}
	h := sha256.New()
	var n, total, lastReport uint64
	var frame [binary.MaxVarintLen64]byte
	err = v.Scan(nil, nil, 0, func(k, val []byte) bool {
		h.Write(frame[:binary.PutUvarint(frame[:], uint64(len(k)))])
		h.Write(k)
		h.Write(frame[:binary.PutUvarint(frame[:], uint64(len(val)))])
		h.Write(val)
		n++
		total += uint64(len(k) + len(val))
		if progress != nil && total-lastReport >= 4<<20 {
			progress(total)
			lastReport = total
		}
		return true
	})
	if err != nil {
		return StateHash{}, err
	}
	if progress != nil {
		progress(total)
	}
	return StateHash{AppliedIndex: applied, Keys: n, Hash: hex.EncodeToString(h.Sum(nil))}, nil
}
