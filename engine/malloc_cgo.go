//go:build cgo && linux

package engine

// #include <malloc.h>
//
// // Only glibc has the dynamic threshold this pins; other C libraries
// // (musl) may not define M_MMAP_THRESHOLD, and then nothing is done.
// static int keelFixMmapThreshold(int n) {
// #ifdef M_MMAP_THRESHOLD
//     return mallopt(M_MMAP_THRESHOLD, n);
// #else
//     return 0;
// #endif
// }
import "C"

import "sync"

// mmapThreshold is the size from which glibc serves an allocation with its
// own mmap and returns it to the system on free.
const mmapThreshold = 128 << 10

var fixMmapOnce sync.Once

// fixMallocThreshold pins glibc's mmap threshold at its default, 128 KiB.
// Pebble allocates memtable arenas (256 KiB and up) with C calloc. glibc
// raises its threshold to the size of every mmapped chunk freed, so once a
// tablet has closed, later arenas come from malloc's heap instead: calloc
// then zeroes (touches) the whole arena, and free keeps the pages, so the
// arenas of tablets opened and closed stay resident for good (measured at
// 1,000 shards with idle tablets closing: 140 MiB of glibc heap left after
// every tablet had closed). Setting the threshold explicitly turns that
// adjustment off, so arenas are always mmapped, untouched until written,
// and unmapped when freed. It is process-wide and harmless to the rest: it
// is glibc's default threshold.
func fixMallocThreshold() {
	fixMmapOnce.Do(func() { C.keelFixMmapThreshold(C.int(mmapThreshold)) })
}
