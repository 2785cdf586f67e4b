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
}

var goMemNames = []string{
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/goal:bytes",
	"/gc/heap/live:bytes",
}

// readGoMem reads the Go runtime's memory.
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
	return g
}

// allocs is the Go heap's cumulative allocation and GC count.
type allocs struct{ bytes, cycles uint64 }

func readAllocs() allocs {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	var a allocs
	if s[0].Value.Kind() == metrics.KindUint64 {
		a.bytes = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		a.cycles = s[1].Value.Uint64()
	}
	return a
}
