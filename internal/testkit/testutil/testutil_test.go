package testutil

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStandaloneReportsFatal: a fixture that calls Fatal stops there,
// its cleanups run (temp dirs removed), and the failure comes back as an
// error instead of an empty fixture.
func TestStandaloneReportsFatal(t *testing.T) {
	var dir string
	reached, cleaned := false, false
	err := Standalone("fixture", func(tb testing.TB) {
		dir = tb.TempDir()
		tb.Cleanup(func() { cleaned = true })
		tb.Fatalf("cluster did not start: %s", "boom")
		reached = true
	})
	if err == nil || !strings.Contains(err.Error(), "cluster did not start: boom") {
		t.Fatalf("Standalone: %v", err)
	}
	if reached || !cleaned {
		t.Fatalf("ran past Fatal %v, cleaned %v", reached, cleaned)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("TempDir %s left behind: %v", dir, err)
	}
	if err := Standalone("ok", func(tb testing.TB) { tb.Helper() }); err != nil {
		t.Fatal(err)
	}
	if err := Standalone("panics", func(tb testing.TB) { tb.Setenv("X", "y") }); err == nil || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("an unimplemented method: %v", err)
	}
}

// TestPollReportsLastError: a timed-out wait says what it still waited
// for, and a condition that comes true ends the wait.
func TestPollReportsLastError(t *testing.T) {
	notYet := errors.New("replica 2 applied 3 of 5")
	err := Poll(30*time.Millisecond, func() error { return notYet })
	if !errors.Is(err, notYet) || !strings.Contains(err.Error(), "timed out after 30ms: replica 2 applied 3 of 5") {
		t.Fatalf("Poll: %v", err)
	}
	n := 0
	Eventually(t, 5*time.Second, func() error {
		if n++; n < 3 {
			return notYet
		}
		return nil
	})
	if n != 3 {
		t.Fatalf("condition called %d times, want 3", n)
	}
}
