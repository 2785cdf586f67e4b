//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"unsafe"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/self/stat.
// Linux fixes it at 100 for user space whatever the kernel's HZ.
const clockTicks = 100

// selfCPU returns the user plus system CPU seconds this process has used.
func selfCPU() (float64, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime from a /proc/<pid>/stat line. The
// command name (field 2) is in parentheses and may hold spaces, so fields
// are counted from the last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/self/stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/self/stat: %d fields", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/self/stat: utime %q stime %q", f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}

// selfMem returns this process's resident set (VmRSS) and its peak (VmHWM)
// in bytes.
func selfMem() (rss, hwm uint64, err error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	return parseStatusMem(b)
}

func parseStatusMem(b []byte) (rss, hwm uint64, err error) {
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(rest) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc/self/status: %q", line)
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/self/status: %q", line)
		}
		if name == "VmRSS" {
			rss = v << 10
		} else {
			hwm = v << 10
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("/proc/self/status: no VmRSS")
	}
	return rss, hwm, nil
}

// openFiles counts this process's open file descriptors and sorts them by
// what they point at (fdKind), so a count over target says which kind grew
// with the shard count.
func openFiles(dir string) (int, map[string]int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, nil, err
	}
	kinds := map[string]int{}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			// The descriptor ReadDir itself used, closed since, or one
			// closed concurrently: not an open file any more.
			continue
		}
		n++
		kinds[fdKind(dir, target)]++
	}
	// ReadDir closed its own descriptor on /proc/self/fd before
	// returning, so it is not among the counted (its Readlink fails).
	return n, kinds, nil
}

// fdKind names what a descriptor's readlink target is: "socket", "pipe",
// an anon_inode's name ("eventpoll", "eventfd", ...), or, for files under
// the state directory, its part ("raft" or "sm") and the file's type
// (sst, log, MANIFEST, LOCK, dir, ...).
func fdKind(dir, target string) string {
	switch {
	case strings.HasPrefix(target, "socket:"):
		return "socket"
	case strings.HasPrefix(target, "pipe:"):
		return "pipe"
	case strings.HasPrefix(target, "anon_inode:"):
		return strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
	case strings.HasPrefix(target, "/proc/"):
		return "proc"
	}
	rel, err := filepath.Rel(dir, target)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "other"
	}
	part, rest, _ := strings.Cut(rel, string(filepath.Separator))
	if part != "raft" && part != "sm" {
		return "other"
	}
	return part + " " + fileType(target, rest)
}

// fileType is the kind of a file by its name, as Pebble names them.
func fileType(target, rel string) string {
	base := filepath.Base(rel)
	if fi, err := os.Stat(target); err == nil && fi.IsDir() {
		return "dir"
	}
	switch {
	case strings.HasPrefix(base, "MANIFEST-"):
		return "MANIFEST"
	case base == "LOCK":
		return "LOCK"
	case strings.HasPrefix(base, "marker."):
		return "marker"
	case filepath.Ext(base) != "":
		return strings.TrimPrefix(filepath.Ext(base), ".")
	}
	return "other"
}

// goMem is the Go runtime's memory at one moment (runtime/metrics, which
// does not stop the world).
type goMem struct {
	// GoMapped is every byte the runtime has mapped and not returned
	// (total minus heap released). Far above its resident share at many
	// shards: Dragonboat's per-shard queues are allocated and never
	// written.
	GoMapped uint64 `json:"go_mapped"`
	// HeapObjects is the heap's objects, live and not yet collected.
	HeapObjects uint64 `json:"heap_objects"`
	// HeapGoal is the heap size at which the next GC ends.
	HeapGoal uint64 `json:"heap_goal"`
	// LiveHeap is the heap marked live by the last GC. With GOGC=100 the
	// heap grows to twice it before the next GC, so every live byte can
	// cost a second one of resident garbage.
	LiveHeap uint64 `json:"live_heap"`
	// HeapArenaRSS is the resident anonymous memory of the mappings in
	// the Go heap's address range (/proc/self/smaps); OtherRSS the rest
	// (C allocations: Pebble's memtable arenas and block cache, glibc's
	// heap; runtime metadata).
	HeapArenaRSS uint64 `json:"heap_arena_rss"`
	OtherRSS     uint64 `json:"other_rss"`
}

// heapProbe is a heap object whose address locates the Go heap: the
// runtime maps its arenas upward from a (randomized) base, so every heap
// mapping lies within heapSpan of it, far from where C's mmaps go.
var heapProbe = new([64]byte)

const heapSpan = 1 << 36

// smapsSplit sums resident anonymous memory over /proc/self/smaps inside
// and outside the Go heap's address range.
func smapsSplit() (heap, other uint64) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, 0
	}
	probe := uint64(uintptr(unsafe.Pointer(heapProbe)))
	return parseSmapsSplit(b, probe-min(probe, heapSpan), probe+heapSpan)
}

// parseSmapsSplit sums the Anonymous lines of smaps text b, split by
// whether their mapping starts in [lo, hi).
func parseSmapsSplit(b []byte, lo, hi uint64) (in, out uint64) {
	var inHeap bool
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			start, _, _ := strings.Cut(f[0], "-")
			a, err := strconv.ParseUint(start, 16, 64)
			inHeap = err == nil && a >= lo && a < hi
			continue
		}
		// Anonymous, not Rss: Rss also counts the zero page mapped where
		// the GC has read heap pages nothing ever wrote.
		if rest, ok := strings.CutPrefix(line, "Anonymous:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 {
				v, _ := strconv.ParseUint(f[0], 10, 64)
				if inHeap {
					in += v << 10
				} else {
					out += v << 10
				}
			}
		}
	}
	return in, out
}

var goMemNames = []string{
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/goal:bytes",
	"/gc/heap/live:bytes",
}

// readGoMem reads the Go runtime's memory and the smaps split.
func readGoMem() *goMem {
	s := make([]metrics.Sample, len(goMemNames))
	for i, n := range goMemNames {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	g := &goMem{GoMapped: v(0) - v(1), HeapObjects: v(2), HeapGoal: v(3), LiveHeap: v(4)}
	g.HeapArenaRSS, g.OtherRSS = smapsSplit()
	return g
}
