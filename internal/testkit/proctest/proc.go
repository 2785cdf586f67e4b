package proctest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keel-db/keel/internal/testkit/testutil"
)

// KillTimeout bounds how long Kill waits for a SIGKILLed process to be
// reaped; longer means the machine is stuck, not the child.
const KillTimeout = 30 * time.Second

// Proc is one run of a child process, from Start until it is reaped.
//
// Invariants: done is closed exactly once, by the reaper goroutine, after
// cmd.Wait returned and err and crashed were set; nothing writes them after.
// A Proc is never restarted: run the command again with a new Start.
type Proc struct {
	name string
	cmd  *exec.Cmd
	out  *testutil.LockedBuffer // nil when the caller routed stdout and stderr itself
	done chan struct{}
	err  error // cmd.Wait's result; set before done closes
	// crashed: the process ended while ending was false. Set before done
	// closes, so a Kill after an exit on its own does not hide the crash.
	crashed bool

	mu     sync.Mutex // guards ending
	ending bool       // Kill or Stop was called: an exit from now on was asked for
}

// Start starts cmd and returns its Proc. The child gets a parent-death
// SIGKILL (Linux); stdout and stderr left nil go to a buffer that Output
// returns and that t.Cleanup logs when the test failed. The cleanup also
// SIGKILLs the child if it still runs. name labels messages and errors.
func Start(t testing.TB, name string, cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{name: name, cmd: cmd, done: make(chan struct{})}
	if cmd.Stdout == nil || cmd.Stderr == nil {
		p.out = &testutil.LockedBuffer{}
		if cmd.Stdout == nil {
			cmd.Stdout = p.out
		}
		if cmd.Stderr == nil {
			cmd.Stderr = p.out
		}
	}
	setParentDeath(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start: %w", name, err)
	}
	go p.reap()
	t.Cleanup(func() {
		if dead, _ := p.Exited(); !dead {
			if err := p.Kill(); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if t.Failed() && p.out != nil {
			t.Logf("%s (%s) output:\n%s", name, strings.Join(cmd.Args, " "), p.out.String())
		}
	})
	return p, nil
}

func (p *Proc) reap() {
	err := p.cmd.Wait()
	p.mu.Lock()
	p.err, p.crashed = err, !p.ending
	p.mu.Unlock()
	close(p.done)
}

// Output is what the child wrote to the streams Start captured so far.
func (p *Proc) Output() string {
	if p.out == nil {
		return ""
	}
	return p.out.String()
}

// Done is closed when the process has ended and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended and, if so, cmd.Wait's
// error: nil for exit status 0, an *exec.ExitError otherwise.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Crashed reports whether the process ended without Kill or Stop having
// been called first: a crash, a self-inflicted signal or an exit on its
// own, whatever the status.
func (p *Proc) Crashed() bool {
	select {
	case <-p.done:
		return p.crashed
	default:
		return false
	}
}

// ExitCode is the exit status, or -1 while running or when a signal ended it.
func (p *Proc) ExitCode() int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// waitDone reports whether the process ended within timeout.
func (p *Proc) waitDone(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// Wait waits up to timeout for the process to end by itself and returns
// cmd.Wait's error, or ErrTimeout with the process left running.
func (p *Proc) Wait(timeout time.Duration) error {
	if !p.waitDone(timeout) {
		return fmt.Errorf("%s: still running after %v: %w", p.name, timeout, ErrTimeout)
	}
	return p.err
}

// Signal sends sig without waiting; the end it may cause counts as a crash
// unless Kill or Stop was called. It fails once the process was reaped.
func (p *Proc) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: %v: %w", p.name, sig, err)
	}
	return nil
}

func (p *Proc) markEnding() {
	p.mu.Lock()
	p.ending = true
	p.mu.Unlock()
}

// Kill SIGKILLs the process (a stopped one too) and waits for it to be
// reaped. Killing a process that already ended is not an error.
func (p *Proc) Kill() error {
	p.markEnding()
	_ = p.cmd.Process.Kill() // fails only when already reaped
	if !p.waitDone(KillTimeout) {
		return fmt.Errorf("%s: still running %v after SIGKILL: %w", p.name, KillTimeout, ErrTimeout)
	}
	return nil
}

// Stop is StopWith(SIGTERM, grace).
func (p *Proc) Stop(grace time.Duration) error { return p.StopWith(syscall.SIGTERM, grace) }

// StopWith asks the process to end with sig and waits up to grace. A
// graceful stop must exit with status 0; otherwise the error wraps the exit
// error. A process still running after grace is SIGKILLed and the error
// wraps ErrKilled; one that had already ended gives ErrExited.
func (p *Proc) StopWith(sig os.Signal, grace time.Duration) error {
	if dead, err := p.Exited(); dead {
		return fmt.Errorf("%s: %w before %v (%v)", p.name, ErrExited, sig, err)
	}
	p.markEnding()
	// A SIGSTOPped process keeps sig pending until it is continued.
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: %v: %w", p.name, sig, err)
	}
	if !p.waitDone(grace) {
		if err := p.Kill(); err != nil {
			return err
		}
		return fmt.Errorf("%s: still running %v after %v: %w", p.name, grace, sig, ErrKilled)
	}
	if p.err != nil {
		return fmt.Errorf("%s: after %v: %w, want exit status 0", p.name, sig, p.err)
	}
	return nil
}

// ExitSignal returns the signal that ended a process, given the error of
// Wait or Exited; ok is false for a normal exit or another error.
func ExitSignal(err error) (sig syscall.Signal, ok bool) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, false
	}
	ws, isWS := ee.Sys().(syscall.WaitStatus)
	if !isWS || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}
