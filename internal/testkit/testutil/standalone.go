package testutil

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Standalone runs f with a testing.TB that belongs to no test, for a fixture
// that several tests share (built once, lazily or in TestMain). Built with
// the first test's t instead, a fixture failure would end that test's
// goroutine inside sync.Once and leave every later test an empty fixture,
// and the fixture's cleanups would run when that one test ends. Here f's
// Fatal ends f as it would a test; Standalone then runs f's Cleanup
// functions and returns the failures as one error, which the sharing tests
// report. TempDir directories are removed by those cleanups, so f must copy
// out what outlives it.
//
// The TB implements Helper, Name, Cleanup, TempDir, Log, Logf, Error,
// Errorf, Fatal, Fatalf, Fail, FailNow, Failed, Skip, Skipf and SkipNow
// (skipping counts as a failure: a fixture cannot be skipped); any other
// method panics, and the panic is returned as an error too.
func Standalone(name string, f func(tb testing.TB)) error {
	tb := &standaloneTB{name: name}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				tb.fail(fmt.Sprintf("panic: %v", r))
			}
		}()
		f(tb)
	}()
	<-done
	tb.runCleanups()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s", name, strings.Join(tb.errs, "; "))
}

type standaloneTB struct {
	// testing.TB is nil: it only supplies the interface's private method.
	testing.TB
	name string

	mu       sync.Mutex // guards errs and cleanups
	errs     []string
	cleanups []func()
}

func (s *standaloneTB) Helper()      {}
func (s *standaloneTB) Name() string { return s.name }

func (s *standaloneTB) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

func (s *standaloneTB) runCleanups() {
	for {
		s.mu.Lock()
		n := len(s.cleanups)
		if n == 0 {
			s.mu.Unlock()
			return
		}
		f := s.cleanups[n-1]
		s.cleanups = s.cleanups[:n-1]
		s.mu.Unlock()
		func() {
			defer func() {
				if r := recover(); r != nil {
					s.fail(fmt.Sprintf("cleanup panic: %v", r))
				}
			}()
			f()
		}()
	}
}

func (s *standaloneTB) TempDir() string {
	dir, err := os.MkdirTemp("", strings.NewReplacer("/", "_", " ", "_").Replace(s.name)+"-")
	if err != nil {
		s.Fatalf("TempDir: %v", err)
	}
	s.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func (s *standaloneTB) Log(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{s.name + ":"}, args...)...)
}
func (s *standaloneTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, s.name+": "+format+"\n", args...)
}

func (s *standaloneTB) fail(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, msg)
}

func (s *standaloneTB) Fail()                             { s.fail("failed") }
func (s *standaloneTB) Error(args ...any)                 { s.fail(fmt.Sprint(args...)) }
func (s *standaloneTB) Errorf(format string, args ...any) { s.fail(fmt.Sprintf(format, args...)) }
func (s *standaloneTB) FailNow()                          { s.fail("failed"); runtime.Goexit() }
func (s *standaloneTB) Fatal(args ...any)                 { s.fail(fmt.Sprint(args...)); runtime.Goexit() }
func (s *standaloneTB) Fatalf(format string, args ...any) {
	s.fail(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (s *standaloneTB) SkipNow()                    { s.fail("skipped"); runtime.Goexit() }
func (s *standaloneTB) Skip(args ...any)            { s.Fatal(append([]any{"skipped:"}, args...)...) }
func (s *standaloneTB) Skipf(f string, args ...any) { s.Fatalf("skipped: "+f, args...) }

func (s *standaloneTB) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.errs) > 0
}
