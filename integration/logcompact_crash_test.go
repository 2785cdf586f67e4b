package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/proctest"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/logcompact"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
)

// The crash test runs one replica in a child process: this test binary
// re-executed with lcHelperEnv set, running TestLogCompactHelperProcess.
const (
	lcHelperEnv     = "KEEL_LC_HELPER"     // "1" in the child
	lcHelperDir     = "KEEL_LC_DIR"        // data directory
	lcHelperRaft    = "KEEL_LC_RAFT"       // Raft address
	lcHelperKillAt  = "KEEL_LC_KILL_AFTER" // SIGKILL itself after this many compactions (0: never)
	lcHelperReadyOK = "KEEL_LC_READY "     // first stdout line prefix, then the HTTP address
)

// TestLogCompactHelperProcess is the child's body; it does nothing in a
// normal run.
func TestLogCompactHelperProcess(t *testing.T) {
	if os.Getenv(lcHelperEnv) != "1" {
		t.Skip("helper process for TestLogCompactCrashAfterCompaction")
	}
	if err := lcHelperMain(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// lcHelperMain hosts a single-replica shard with an aggressive compaction
// policy and serves PUT/GET over HTTP on 127.0.0.1.
func lcHelperMain() error {
	dir, raftAddr := os.Getenv(lcHelperDir), os.Getenv(lcHelperRaft)
	var killAfter uint64
	if _, err := fmt.Sscan(os.Getenv(lcHelperKillAt), &killAfter); err != nil {
		return err
	}
	testcluster.Quiet()
	nh, err := dragonboat.NewNodeHost(config.NodeHostConfig{
		NodeHostDir: filepath.Join(dir, "raft"), RTTMillisecond: 5, RaftAddress: raftAddr,
		Expert: config.ExpertConfig{LogDB: host.LogDBConfig()},
	})
	if err != nil {
		return err
	}
	defer nh.Close()
	f, err := host.NewFactory(host.Config{RootDir: filepath.Join(dir, "sm")})
	if err != nil {
		return err
	}
	if err := nh.StartOnDiskReplica(map[uint64]dragonboat.Target{1: raftAddr}, false, f.Create,
		host.ShardConfig(1, 1)); err != nil {
		return err
	}
	comp, err := logcompact.New(logcompact.Config{NodeHost: nh, ShardID: 1, ReplicaID: 1,
		Policy: logcompact.Policy{KeepEntries: 200, KeepBytes: 1 << 20, TriggerEntries: 100, TriggerBytes: 1 << 20},
		Dirs:   []string{filepath.Join(dir, "raft")}, Interval: 20 * time.Millisecond})
	if err != nil {
		return err
	}
	cl := client.NewClient(nh, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/put", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		q := r.URL.Query()
		err := testcluster.Retry(ctx, func(ctx context.Context) error {
			return cl.Put(ctx, []byte(q.Get("k")), []byte(q.Get("v")))
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		var v []byte
		var found bool
		err := testcluster.Retry(ctx, func(ctx context.Context) (err error) {
			v, found, err = cl.Get(ctx, []byte(r.URL.Query().Get("k")))
			return err
		})
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case !found:
			http.Error(w, "not found", http.StatusNotFound)
		default:
			_, _ = w.Write(v)
		}
	})
	go func() { _ = http.Serve(l, mux) }()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, _, ok, err := nh.GetLeaderID(1); err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("no leader after 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("%s%s\n", lcHelperReadyOK, l.Addr())
	// Drive compaction here rather than with Run so the kill lands right
	// after a compaction completed.
	for {
		time.Sleep(20 * time.Millisecond)
		due, err := comp.Due()
		if err != nil || !due {
			continue
		}
		res, err := comp.Step(context.Background())
		if err != nil || res.CompactedTo == 0 {
			continue
		}
		if killAfter > 0 && comp.Stats().Compactions >= killAfter {
			fmt.Printf("KILL compacted-to %d first %d\n", res.CompactedTo, res.FirstAfter)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}

type lcChild struct {
	proc *proctest.Proc
	http string
	out  chan string // stdout lines after the ready line
}

func lcStartChild(t *testing.T, dir, raftAddr string, killAfter int) *lcChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLogCompactHelperProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), lcHelperEnv+"=1", lcHelperDir+"="+dir, lcHelperRaft+"="+raftAddr,
		fmt.Sprintf("%s=%d", lcHelperKillAt, killAfter))
	if testing.Verbose() && os.Getenv("KEEL_TEST_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	// Lines reach the scanner through a pipe that is closed once the child
	// was reaped, which is after every byte it wrote was copied.
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	p, err := proctest.Start(t, "helper", cmd)
	if err != nil {
		t.Fatal(err)
	}
	go func() { <-p.Done(); pw.Close() }()
	ready := make(chan string, 1)
	out := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, lcHelperReadyOK); ok {
				ready <- a
				continue
			}
			select {
			case out <- line:
			default:
			}
		}
		close(out)
	}()
	select {
	case a := <-ready:
		return &lcChild{proc: p, http: "http://" + a, out: out}
	case <-p.Done():
		_, err := p.Exited()
		t.Fatalf("helper process exited before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("helper process did not become ready")
	}
	return nil
}

func (c *lcChild) put(k, v string) error {
	resp, err := http.Post(c.http+"/put?k="+url.QueryEscape(k)+"&v="+url.QueryEscape(v), "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("put %s: %s: %s", k, resp.Status, b)
	}
	return nil
}

func (c *lcChild) get(k string) (string, error) {
	b, err := proctest.Get(http.DefaultClient, c.http+"/get?k="+url.QueryEscape(k))
	return string(b), err
}

// TestLogCompactCrashAfterCompaction runs one replica (the only copy of
// the data) in a child process that compacts its log every ~100 entries
// behind a 200-entry window and SIGKILLs itself right after its 5th
// compaction, while 16 writers keep writing. After a restart on the same
// directory every write that was acknowledged before the kill must read
// back with its value: compaction removed only entries whose effects Sync
// had made durable.
func TestLogCompactCrashAfterCompaction(t *testing.T) {
	dir := t.TempDir()
	addr := proctest.FreeAddrs(t, 1)[0]
	child := lcStartChild(t, dir, addr, 5)

	var mu sync.Mutex // guards acked
	acked := map[string]string{}
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				k, v := fmt.Sprintf("w%02d-%06d", w, i), fmt.Sprintf("v%d-%d", w, i)
				if err := child.put(k, v); err != nil {
					return // the child died; this write is not acknowledged
				}
				mu.Lock()
				acked[k] = v
				mu.Unlock()
			}
		}()
	}
	werr := child.proc.Wait(2 * time.Minute)
	if errors.Is(werr, proctest.ErrTimeout) {
		t.Fatal("helper was not killed after 5 compactions")
	}
	wg.Wait()
	if sig, ok := proctest.ExitSignal(werr); !ok || sig != syscall.SIGKILL {
		t.Fatalf("helper exited with %v, want SIGKILL after a compaction", werr)
	}
	for line := range child.out {
		t.Logf("helper: %s", line)
	}
	t.Logf("%d writes acknowledged before the kill", len(acked))
	if len(acked) < 500 {
		t.Fatalf("only %d acknowledged writes: the log was not compacted past many of them", len(acked))
	}

	child2 := lcStartChild(t, dir, addr, 0)
	var missing []string
	for k, v := range acked {
		got, err := child2.get(k)
		if err != nil || got != v {
			missing = append(missing, fmt.Sprintf("%s (got %q, err %v)", k, got, err))
			if len(missing) > 10 {
				break
			}
		}
	}
	if len(missing) > 0 {
		t.Fatalf("acknowledged writes lost after SIGKILL right after a compaction: %v", missing)
	}
}
