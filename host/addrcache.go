package host

import (
	"sync"
	"sync/atomic"

	"github.com/lni/goutils/stringutil"
)

// validAddress is stringutil.IsValidAddress with its true answers
// remembered. PeerGuard checks the source address of every message batch,
// and IsValidAddress runs a regular expression: 2.5-2.7% of a keeld's CPU
// at K = 16 writers (bench/README.md, 2026-12-07). A NodeHost hears from
// a handful of peer addresses, so the cache is tiny; it stops growing at
// validAddrCap entries (then the check simply runs each time), so a peer
// sending many distinct addresses cannot grow memory. The answer is a
// pure function of the string, so a cached answer is always the right one.
const validAddrCap = 256

var (
	validAddrs  sync.Map // string -> struct{}: addresses found valid
	validAddrsN atomic.Int64
)

func validAddress(addr string) bool {
	if _, ok := validAddrs.Load(addr); ok {
		return true
	}
	if !stringutil.IsValidAddress(addr) {
		return false
	}
	if validAddrsN.Load() < validAddrCap {
		if _, loaded := validAddrs.LoadOrStore(addr, struct{}{}); !loaded {
			validAddrsN.Add(1)
		}
	}
	return true
}
