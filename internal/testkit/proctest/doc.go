// Package proctest runs child processes for tests: a keeld binary, a helper
// re-execution of the test binary, any exec.Cmd. It owns the mechanics that
// every such test needs and nothing about what the child does:
//
//   - Start runs the command with a parent-death signal (SIGKILL on Linux,
//     so a test binary that is killed or times out takes its children with
//     it), captures whichever of stdout and stderr the caller left unset
//     into a testutil.LockedBuffer, reaps the process, and registers a
//     t.Cleanup that SIGKILLs it if it still runs and logs its captured
//     output when the test failed.
//   - A Proc is ended by Kill (SIGKILL), Stop (SIGTERM, a bounded wait, then
//     SIGKILL) or by itself. Exited, Wait, ExitCode and Crashed report how
//     it ended; Crashed is true only for an exit the test did not ask for.
//   - FreeAddrs picks loopback ports; Poll, Proc.Poll, Eventually and
//     WaitJSON wait on a condition with a deadline, waking at once when the
//     watched process exits.
//
// What the child is (flags, status documents, fault bookkeeping) stays with
// the tests that run it.
//
// # Concurrency
//
// Start may be called from any goroutine while the test runs (it calls
// t.Cleanup, which is safe concurrently); it must not be called after the
// test returned. Every Proc method is safe from any goroutine. After Start,
// the Proc owns the exec.Cmd: one goroutine per Proc calls cmd.Wait, and
// nobody else may call Wait, Start or read the Cmd's ProcessState.
//
// Pdeathsig is tied to the OS thread that started the child: a child
// started from a goroutine that holds runtime.LockOSThread and later exits
// is killed when that thread ends. Tests here never lock threads.
//
// Polling is the only waiting this package does: every PollInterval until a
// deadline, never a fixed sleep that hopes the child got somewhere.
package proctest
