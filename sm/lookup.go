package sm

import (
	"errors"
	"fmt"

	"github.com/keel-db/keel/engine"
)

// Lookup queries. Lookup takes one of these (by value or pointer) and
// returns the matching result type.
type (
	// GetQuery reads one key. Result: GetResult.
	GetQuery struct{ Key []byte }
	// ScanQuery reads keys in order from [Start, End), or every key with
	// Prefix when Prefix is set (Start and End then narrow the prefix range).
	// Limit 0 means DefaultScanLimit; it is capped at MaxScanLimit.
	// Result: ScanResult.
	ScanQuery struct {
		Start, End, Prefix []byte
		Limit              int
	}
	// StatsQuery asks for engine.Stats; Exact forces a full count.
	StatsQuery struct{ Exact bool }
	// HashQuery asks for the engine.StateHash of all user data.
	HashQuery struct{}
)

// Scan limits: a scan result is held in memory whole, so it is bounded.
const (
	DefaultScanLimit = 1000
	MaxScanLimit     = 10000
)

// GetResult answers GetQuery.
type GetResult struct {
	Value []byte
	Found bool
}

// KV is one key and its value.
type KV struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

// ScanResult answers ScanQuery. When More is true there were further keys in
// the range; NextKey is the first of them, to pass as Start to continue.
type ScanResult struct {
	Pairs   []KV
	More    bool
	NextKey []byte
}

// Lookup serves GetQuery, ScanQuery, StatsQuery and HashQuery from a
// consistent view of the live image.
func (s *StateMachine) Lookup(q interface{}) (interface{}, error) {
	eng, err := s.acquire(false)
	if err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	switch q := q.(type) {
	case GetQuery:
		return get(eng, q.Key)
	case *GetQuery:
		return get(eng, q.Key)
	case ScanQuery:
		return scan(eng, q)
	case *ScanQuery:
		return scan(eng, *q)
	case StatsQuery:
		return eng.Stats(q.Exact)
	case *StatsQuery:
		return eng.Stats(q.Exact)
	case HashQuery, *HashQuery:
		return hash(eng)
	default:
		return nil, fmt.Errorf("%w: %T", ErrUnknownQuery, q)
	}
}

func get(eng *engine.Engine, key []byte) (GetResult, error) {
	v, err := eng.Get(key)
	if errors.Is(err, engine.ErrNotFound) {
		return GetResult{}, nil
	}
	if err != nil {
		return GetResult{}, err
	}
	return GetResult{Value: v, Found: true}, nil
}

// PrefixEnd returns the smallest key above every key with prefix p, or nil
// when there is none (p is empty or all 0xff).
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Range resolves a ScanQuery's bounds to [start, end); a nil end is
// unbounded.
func (q ScanQuery) Range() (start, end []byte) {
	start, end = q.Start, q.End
	if len(q.Prefix) > 0 {
		pEnd := PrefixEnd(q.Prefix)
		if string(start) < string(q.Prefix) {
			start = q.Prefix
		}
		if end == nil || (pEnd != nil && string(end) > string(pEnd)) {
			end = pEnd
		}
	}
	return start, end
}

func scan(eng *engine.Engine, q ScanQuery) (ScanResult, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultScanLimit
	}
	if limit > MaxScanLimit {
		limit = MaxScanLimit
	}
	start, end := q.Range()
	v, err := eng.NewView()
	if err != nil {
		return ScanResult{}, err
	}
	defer v.Close()
	var res ScanResult
	// Read one key past the limit to learn whether there are more.
	err = v.Scan(start, end, limit+1, func(k, val []byte) bool {
		if len(res.Pairs) == limit {
			res.More = true
			res.NextKey = append([]byte(nil), k...)
			return false
		}
		res.Pairs = append(res.Pairs, KV{Key: append([]byte(nil), k...), Value: append([]byte(nil), val...)})
		return true
	})
	return res, err
}

func hash(eng *engine.Engine) (engine.StateHash, error) {
	v, err := eng.NewView()
	if err != nil {
		return engine.StateHash{}, err
	}
	defer v.Close()
	return v.Hash(nil)
}
