package sm

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/internal/testkit/proctest"
	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4/statemachine"
)

const (
	idleKillEnv  = "KEEL_SM_IDLE_KILL_DIR"  // the child's root directory
	idleKillSeed = "KEEL_SM_IDLE_KILL_SEED" // the child's random seed
	idleKillN    = 4                        // state machines in the child
)

// TestIdleKillHelperProcess is the child of TestIdleTabletsSurviveSIGKILL:
// it drives idleKillN state machines with a short IdleClose, reopening
// them lazily as a restart does, until it is killed. After every Sync it
// prints "synced SHARD INDEX": what a crash must not lose.
func TestIdleKillHelperProcess(t *testing.T) {
	root := os.Getenv(idleKillEnv)
	if root == "" {
		t.Skip("helper process for TestIdleTabletsSurviveSIGKILL")
	}
	seed, _ := strconv.ParseUint(os.Getenv(idleKillSeed), 10, 64)
	r := rand.New(rand.NewPCG(seed, 1))
	out := bufio.NewWriter(os.Stdout)
	sms := make([]*StateMachine, idleKillN+1)
	next := make([]uint64, idleKillN+1)
	for shard := uint64(1); shard <= idleKillN; shard++ {
		sms[shard] = New(idleKillConfig(root, shard))
		applied, err := sms[shard].Open(make(chan struct{}))
		if err != nil {
			fmt.Fprintln(os.Stderr, "open:", err)
			os.Exit(2)
		}
		next[shard] = applied + 1
	}
	fmt.Fprintln(out, "ready")
	out.Flush()
	for {
		shard := uint64(1 + r.IntN(idleKillN))
		s := sms[shard]
		n := 1 + r.IntN(5)
		es := make([]statemachine.Entry, n)
		for i := range es {
			idx := next[shard] + uint64(i)
			c := Command{Op: OpPut, Key: []byte(fmt.Sprintf("e%06d", idx)), Value: []byte(strconv.FormatUint(idx, 10))}
			cmd, _ := c.Encode()
			es[i] = statemachine.Entry{Index: idx, Cmd: cmd}
		}
		if _, err := s.Update(es); err != nil {
			fmt.Fprintln(os.Stderr, "update:", err)
			os.Exit(2)
		}
		next[shard] += uint64(n)
		switch r.IntN(4) {
		case 0:
			if err := s.Sync(); err != nil {
				fmt.Fprintln(os.Stderr, "sync:", err)
				os.Exit(2)
			}
			fmt.Fprintf(out, "synced %d %d\n", shard, next[shard]-1)
			out.Flush()
		case 1:
			if _, err := s.Lookup(GetQuery{Key: []byte("e000001")}); err != nil {
				fmt.Fprintln(os.Stderr, "lookup:", err)
				os.Exit(2)
			}
		}
		// Pauses around the idle time, so tablets close and reopen.
		time.Sleep(time.Duration(r.IntN(30)) * time.Millisecond)
	}
}

func idleKillConfig(root string, shard uint64) Config {
	return Config{Dir: fmt.Sprintf("%s/shard-%d", root, shard), ShardID: shard, ReplicaID: 1,
		Engine: engine.Options{Logger: quietLogger()}, IdleClose: 15 * time.Millisecond}
}

// TestIdleTabletsSurviveSIGKILL kills, with SIGKILL at random moments, a
// process whose tablets close when idle and reopen (read-only for reads,
// lazily after each restart from the closed record), then reopens every
// state machine: each holds every entry up to its applied index and none
// after (so the applied index Open returned, lazily or not, matches the
// data), and no synced entry is lost.
func TestIdleTabletsSurviveSIGKILL(t *testing.T) {
	seed := testutil.Seed(t)
	root := t.TempDir()
	synced := make([]uint64, idleKillN+1)
	rounds := 8
	if testing.Short() {
		rounds = 3
	}
	// A round whose kill finds no tablet cleanly closed opens none lazily;
	// on a loaded machine every round can, so rounds go on (up to
	// maxRounds) until at least one lazy open was checked.
	maxRounds := 4 * rounds
	var lazy int
	for round := 0; round < rounds || (lazy == 0 && round < maxRounds); round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestIdleKillHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), idleKillEnv+"="+root, fmt.Sprintf("%s=%d", idleKillSeed, seed+uint64(round)))
		pr, pw, err := os.Pipe()
		must(t, err)
		cmd.Stdout = pw
		cmd.Stderr = os.Stderr
		p, err := proctest.Start(t, "idle-kill child", cmd)
		must(t, err)
		pw.Close()
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		if l := <-lines; l != "ready" {
			t.Fatalf("round %d: child said %q", round, l)
		}
		deadline := time.After(time.Duration(100+rand.New(rand.NewPCG(seed, uint64(round))).IntN(400)) * time.Millisecond)
	drive:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("round %d: child ended", round)
				}
				var shard, idx uint64
				if _, err := fmt.Sscanf(l, "synced %d %d", &shard, &idx); err == nil && shard <= idleKillN {
					synced[shard] = max(synced[shard], idx)
				}
			case <-deadline:
				break drive
			}
		}
		must(t, p.Kill())
		for range lines {
		}
		// Check every state machine, as a restart would open it.
		for shard := uint64(1); shard <= idleKillN; shard++ {
			s := New(idleKillConfig(root, shard))
			applied, err := s.Open(make(chan struct{}))
			must(t, err)
			if !s.TabletOpen() {
				lazy++
			}
			if applied < synced[shard] {
				t.Fatalf("round %d shard %d: applied %d after SIGKILL, below the synced %d", round, shard, applied, synced[shard])
			}
			for i := uint64(1); i <= applied+3; i++ {
				v, found := lookupGet(t, s, fmt.Sprintf("e%06d", i))
				if want := i <= applied; found != want || (found && v != strconv.FormatUint(i, 10)) {
					t.Fatalf("round %d shard %d: applied %d, entry %d found=%v value %q", round, shard, applied, i, found, v)
				}
			}
			must(t, s.Close())
		}
	}
	if lazy == 0 {
		t.Fatal("no state machine ever opened from a closed record: the test checks nothing lazy")
	}
	t.Logf("%d lazy opens after SIGKILL; synced %v", lazy, synced[1:])
}
