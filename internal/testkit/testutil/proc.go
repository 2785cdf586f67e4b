package testutil

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// LockedBuffer is a bytes.Buffer safe for concurrent writers: a child
// process's stderr, or an slog handler used from several goroutines.
type LockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// GoTool is the go command that built the running test: the one on PATH,
// else the one in GOROOT.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}
