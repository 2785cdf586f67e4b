//go:build linux

package host

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSyncAppend measures what one 4 KiB write and its sync cost, in
// wall time and in CPU time of the process (the kernel's work included,
// which is most of it), for the ways a LogDB WAL can be synced:
//
//	grow/fsync: a file that grows by every write, fsync'd: a WAL Pebble v1
//	  creates through DiskFullFS, whose ErrorFS hides the file's Fd
//	grow/fdatasync: the same file fdatasync'd
//	fallocate/fdatasync: blocks reserved ahead but unwritten (what Pebble
//	  does when it sees a file's Fd)
//	overwrite/fdatasync: writes over blocks written before (a recycled WAL)
//
// It is the evidence for leaving DiskFullFS's Sync an fsync
// (bench/README.md, "Per-write cost, second pass"): a file whose size
// changes needs a journal commit under either call.
//
//	go test -run '^$' -bench SyncAppend -benchtime 2000x ./host/
func BenchmarkSyncAppend(b *testing.B) {
	const size = 16 << 20
	for _, tc := range []struct {
		name    string
		prepare func(f *os.File) error
		sync    func(f *os.File) error
	}{
		{"grow/fsync", nil, (*os.File).Sync},
		{"grow/fdatasync", nil, fdatasync},
		{"fallocate/fdatasync", func(f *os.File) error {
			return syscall.Fallocate(int(f.Fd()), 1 /* FALLOC_FL_KEEP_SIZE */, 0, size)
		}, fdatasync},
		{"overwrite/fdatasync", func(f *os.File) error {
			if _, err := f.Write(make([]byte, size)); err != nil {
				return err
			}
			if err := f.Sync(); err != nil {
				return err
			}
			_, err := f.Seek(0, 0)
			return err
		}, fdatasync},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if b.N*4096 > size {
				b.Skipf("%d writes overrun the %d MiB file; use -benchtime %dx or less", b.N, size>>20, size/4096)
			}
			f, err := os.Create(filepath.Join(b.TempDir(), "wal.log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if tc.prepare != nil {
				if err := tc.prepare(f); err != nil {
					b.Fatal(err)
				}
			}
			buf := make([]byte, 4096)
			cpu0 := processCPU(b)
			b.ResetTimer()
			for range b.N {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
				if err := tc.sync(f); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// processCPU is the process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
