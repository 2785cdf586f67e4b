// Command keelctl inspects, checks, exports and repairs the data directory of
// a stopped Keel replica. See `keelctl help` and README.md ("Inspecting a
// node").
//
// Exit codes:
//
//	0  success
//	1  the check or verification found problems (each is printed), or a
//	   snapshot fails verify
//	2  usage error: unknown subcommand, bad flags or arguments; import
//	   refusing inputs that do not fit the replica (shard, replica ID,
//	   address, members)
//	3  the directory cannot be used: missing, not Keel's, held by a running
//	   process, or too damaged to open
//	4  any other failure (I/O errors, ...)
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Sentinel errors, each mapped to an exit code by exitCode.
var (
	errUsage    = errors.New("usage")
	errProblems = errors.New("problems found")
	errNotKeel  = errors.New("not a Keel data directory")
	errLive     = errors.New("directory in use")
	errOpen     = errors.New("cannot open")
	// errBadSnapshot is returned when a snapshot (export, .gbsnap or
	// stream) fails verification; it exits like errProblems.
	errBadSnapshot = errors.New("snapshot fails verification")
	// errUnsafe is returned when import refuses its inputs: they would
	// rewrite the wrong replica or leave it unable to start.
	errUnsafe = errors.New("refused")
)

const (
	exitOK       = 0
	exitProblems = 1
	exitUsage    = 2
	exitUnusable = 3
	exitFailure  = 4
)

func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errProblems), errors.Is(err, errBadSnapshot):
		return exitProblems
	case errors.Is(err, errUsage), errors.Is(err, errUnsafe):
		return exitUsage
	case errors.Is(err, errNotKeel), errors.Is(err, errLive), errors.Is(err, errOpen):
		return exitUnusable
	default:
		return exitFailure
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes keelctl with args and returns the exit code. Errors are
// printed as one line on stderr; a panic anywhere below is turned into an
// error line too, so no input can produce a stack trace.
func run(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "keelctl: internal error: %v\n", r)
			code = exitFailure
		}
	}()
	cmd := newRootCmd(stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		err = fmt.Errorf("%w: %w", errUsage, err)
	}
	if err != nil {
		fmt.Fprintf(stderr, "keelctl: %v\n", err)
	}
	return exitCode(err)
}

func isUnusable(err error) bool { return exitCode(err) == exitUnusable }

func isLiveErr(err error) bool { return errors.Is(err, errLive) }
