// Package testutil holds small helpers shared by Keel's tests.
package testutil

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// Seed returns the seed for a randomized test: KEEL_TEST_SEED when set,
// otherwise the clock. It is always logged so a failure can be replayed.
func Seed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KEEL_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KEEL_TEST_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with KEEL_TEST_SEED=%d)", seed, seed)
	return seed
}
