//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keel-db/keel/bench/internal/loopback"
)

// stopTimeout is how long a keeld has to exit after SIGTERM.
const stopTimeout = 20 * time.Second

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
const clockTicks = 100

// node is one keeld process of a run.
type node struct {
	id        int
	dir       string
	httpAddr  string
	raftAddr  string
	pprofAddr string
	cmd       *exec.Cmd
	exited    chan struct{} // closed when cmd has exited
}

// trio is the three processes of one run.
type trio struct {
	root  string // the run's directory, removed by stop
	nodes []*node
}

// startTrio starts three keeld processes of bin under root, each a member
// of every shard.
func startTrio(bin, root string, shards int, extra []string) (*trio, error) {
	ports, err := loopback.FreePorts(9)
	if err != nil {
		return nil, err
	}
	var members []string
	for i := 0; i < 3; i++ {
		members = append(members, fmt.Sprintf("%d=%s", i+1, ports[3+i]))
	}
	t := &trio{root: root}
	for i := 0; i < 3; i++ {
		n := &node{id: i + 1, dir: filepath.Join(root, fmt.Sprintf("r%d", i+1)),
			httpAddr: ports[i], raftAddr: ports[3+i], pprofAddr: ports[6+i]}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			t.stop()
			return nil, err
		}
		args := append([]string{"--data-dir", n.dir, "--http", n.httpAddr, "--raft-addr", n.raftAddr,
			"--replica-id", fmt.Sprint(n.id), "--members", strings.Join(members, ","),
			"--shards", fmt.Sprint(shards), "--quiesce"}, extra...)
		if err := n.start(bin, args); err != nil {
			t.stop()
			return nil, err
		}
		t.nodes = append(t.nodes, n)
	}
	return t, nil
}

func (n *node) start(bin string, args []string) error {
	logf, err := os.Create(n.dir + ".log")
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "KEEL_PPROF="+n.pprofAddr)
	// Pdeathsig: keeld dies with the benchmark even when it is SIGKILLed;
	// Setpgid: a terminal's Ctrl-C reaches only the benchmark.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("%w: start %s: %v", errProcess, bin, err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(n.exited)
	}()
	return nil
}

// alive returns an error naming the first process that exited.
func (t *trio) alive() error {
	for _, n := range t.nodes {
		select {
		case <-n.exited:
			return fmt.Errorf("%w: replica %d exited (%s); see %s.log", errProcess, n.id, n.cmd.ProcessState, n.dir)
		default:
		}
	}
	return nil
}

// stop ends the three processes (SIGTERM, then SIGKILL) and removes the
// run's directory.
func (t *trio) stop() {
	for _, n := range t.nodes {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range t.nodes {
		select {
		case <-n.exited:
		case <-time.After(stopTimeout):
			_ = n.cmd.Process.Signal(syscall.SIGKILL)
			<-n.exited
		}
	}
	_ = os.RemoveAll(t.root)
}

// procCPU returns the user plus system CPU seconds pid has used.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields are counted from the last ')': the command name may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: /proc/%d/stat: no command name", errProbe, pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: /proc/%d/stat: %d fields", errProbe, pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%w: /proc/%d/stat: utime %q stime %q", errProbe, pid, f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}

// procRSS returns pid's resident set (VmRSS) in bytes.
func procRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				v, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					return v << 10, nil
				}
			}
			return 0, fmt.Errorf("%w: /proc/%d/status: %q", errProbe, pid, line)
		}
	}
	return 0, fmt.Errorf("%w: /proc/%d/status: no VmRSS", errProbe, pid)
}

// loadAvg returns /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
