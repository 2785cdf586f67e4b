package proctest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The children are this test binary re-executed with childEnv naming what
// to do; TestMain runs that instead of the tests.
const childEnv = "PROCTEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child is the body of a child process. "ready" on stdout means its signal
// handling is in place.
func child(mode string) int {
	switch mode {
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	case "term-exit0", "term-exit1":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		<-c
		if mode == "term-exit1" {
			return 1
		}
		return 0
	case "exit3":
		fmt.Fprintln(os.Stderr, "exit3: bye")
		return 3
	case "sleep":
	case "spawn":
		return spawn()
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		return 2
	}
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour) // the child idles until it is signalled
	}
}

// spawn starts a "sleep" grandchild the way Start would, prints its pid
// and idles: the parent-death test kills this process and watches the
// grandchild.
func spawn() int {
	cmd := command("sleep")
	setParentDeath(cmd)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("pid %d\n", cmd.Process.Pid)
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour) // idles until killed
	}
}

func command(mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	return cmd
}

// startChild starts a child in mode and, for a long-running one, waits
// until it said it is ready.
func startChild(t *testing.T, mode string) *Proc {
	t.Helper()
	p, err := Start(t, mode, command(mode))
	if err != nil {
		t.Fatal(err)
	}
	if mode == "exit3" {
		return p
	}
	err = p.Poll(30*time.Second, func() error {
		if !strings.Contains(p.Output(), "ready") {
			return errors.New("no ready line yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v; output %q", err, p.Output())
	}
	return p
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	p := startChild(t, "ignore-term")
	err := p.Stop(300 * time.Millisecond)
	if !errors.Is(err, ErrKilled) {
		t.Fatalf("Stop on a child ignoring SIGTERM = %v, want ErrKilled", err)
	}
	dead, werr := p.Exited()
	if !dead {
		t.Fatal("still running after Stop")
	}
	if sig, ok := ExitSignal(werr); !ok || sig != syscall.SIGKILL {
		t.Fatalf("ended by %v (%v), want SIGKILL", sig, werr)
	}
	if p.Crashed() {
		t.Fatal("a stop the test asked for counts as a crash")
	}
}

func TestStopGraceful(t *testing.T) {
	p := startChild(t, "term-exit0")
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if dead, err := p.Exited(); !dead || err != nil || p.ExitCode() != 0 {
		t.Fatalf("Exited = %v, %v, code %d; want exit 0", dead, err, p.ExitCode())
	}
	if err := p.Stop(time.Second); !errors.Is(err, ErrExited) {
		t.Fatalf("second Stop = %v, want ErrExited", err)
	}
}

// TestStopPaused: SIGTERM to a SIGSTOPped child stays pending; Stop must
// continue it rather than wait out the grace period and SIGKILL it.
func TestStopPaused(t *testing.T) {
	p := startChild(t, "term-exit0")
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatalf("Stop on a stopped child: %v", err)
	}
}

func TestStopNonZeroExit(t *testing.T) {
	p := startChild(t, "term-exit1")
	err := p.Stop(30 * time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("Stop on a child exiting 1 = %v, want its exit error", err)
	}
}

func TestExitedReportsCrash(t *testing.T) {
	p := startChild(t, "exit3")
	if err := p.Wait(30 * time.Second); p.ExitCode() != 3 {
		t.Fatalf("Wait = %v, exit code %d; want 3", err, p.ExitCode())
	}
	dead, err := p.Exited()
	var ee *exec.ExitError
	if !dead || !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Exited = %v, %v; want true and exit status 3", dead, err)
	}
	if !p.Crashed() {
		t.Fatal("an exit the test did not ask for is not reported as a crash")
	}
	// A Kill after the fact does not turn the crash into a requested end.
	if err := p.Kill(); err != nil || !p.Crashed() {
		t.Fatalf("Kill after the crash = %v, Crashed %v", err, p.Crashed())
	}
	if !strings.Contains(p.Output(), "exit3: bye") {
		t.Fatalf("stderr not captured: %q", p.Output())
	}
}

func TestKill(t *testing.T) {
	p := startChild(t, "sleep")
	if dead, _ := p.Exited(); dead || p.Crashed() || p.ExitCode() != -1 {
		t.Fatal("a running child reports an exit")
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	_, err := p.Exited()
	if sig, ok := ExitSignal(err); !ok || sig != syscall.SIGKILL || p.Crashed() {
		t.Fatalf("after Kill: %v (crashed %v), want SIGKILL and no crash", err, p.Crashed())
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("second Kill: %v", err)
	}
	if err := p.Signal(syscall.SIGCONT); err == nil {
		t.Fatal("Signal to a reaped process succeeded")
	}
}

func TestWaitTimeout(t *testing.T) {
	p := startChild(t, "sleep")
	if err := p.Wait(50 * time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Wait on a running child = %v, want ErrTimeout", err)
	}
	if dead, _ := p.Exited(); dead {
		t.Fatal("Wait's timeout ended the child")
	}
}

// TestCleanupKills: a child still running when its test ends is killed
// before the test's t.Run returns.
func TestCleanupKills(t *testing.T) {
	var p *Proc
	t.Run("inner", func(t *testing.T) { p = startChild(t, "sleep") })
	dead, err := p.Exited()
	if sig, _ := ExitSignal(err); !dead || sig != syscall.SIGKILL {
		t.Fatalf("after the test: exited %v (%v), want killed", dead, err)
	}
}

func TestPollGivesUpWhenProcessExits(t *testing.T) {
	p := startChild(t, "exit3")
	start := time.Now()
	err := p.Poll(time.Minute, func() error { return errors.New("never ready") })
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Poll = %v, want ErrExited with the exit status", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("Poll waited %v for a dead child", d)
	}
}

func TestPoll(t *testing.T) {
	n := 0
	if err := Poll(time.Minute, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, n)
	}
	err := Poll(100*time.Millisecond, func() error { return errors.New("still no") })
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "still no") {
		t.Fatalf("Poll past its deadline = %v, want ErrTimeout with the last reason", err)
	}
	boom := errors.New("boom")
	calls := 0
	err = Poll(time.Minute, func() error { calls++; return Abort(fmt.Errorf("wrapped: %w", boom)) })
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("aborted Poll = %v after %d calls, want boom after 1", err, calls)
	}
}

func TestWaitJSON(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		if n == 1 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, `{"n": %d}`, n)
	}))
	defer srv.Close()
	c := &http.Client{Timeout: 5 * time.Second}
	type doc struct{ N int }
	err := WaitJSON(nil, c, srv.URL, time.Minute, func(d doc) error {
		if d.N < 4 {
			return fmt.Errorf("n=%d", d.N)
		}
		return nil
	})
	if err != nil || hits.Load() != 4 {
		t.Fatalf("WaitJSON = %v after %d requests, want nil after 4", err, hits.Load())
	}
	var d doc
	if err := GetJSON(c, srv.URL+"/x", &d); err != nil || d.N != 5 {
		t.Fatalf("GetJSON = %v, %+v", err, d)
	}
	bad := httptest.NewServer(http.NotFoundHandler())
	defer bad.Close()
	if _, err := Get(c, bad.URL); !errors.Is(err, ErrHTTPStatus) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Get on a 404 = %v, want ErrHTTPStatus", err)
	}
}

// TestFreeAddrs binds every returned address at once: they are loopback,
// free and distinct.
func TestFreeAddrs(t *testing.T) {
	addrs := FreeAddrs(t, 8)
	for _, a := range addrs {
		if host, _, err := net.SplitHostPort(a); err != nil || host != "127.0.0.1" {
			t.Fatalf("%q in %v is not a 127.0.0.1 address", a, addrs)
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s of %v cannot be bound: %v", a, addrs, err)
		}
		defer l.Close()
	}
}
