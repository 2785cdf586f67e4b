package host_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/statemachine"
)

// Commands are plain bytes: encode them with the helpers and propose them
// with NodeHost.SyncPropose (or use Client, which does both).
func ExamplePutCommand() {
	cmd, err := client.PutCommand([]byte("greeting"), []byte("hello"))
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d bytes: %x\n", len(cmd), cmd)

	// The state machine decodes exactly what the helper encoded.
	c, err := sm.Decode(cmd)
	if err != nil {
		panic(err)
	}
	fmt.Printf("op %d key %q value %q\n", c.Op, c.Key, c.Value)

	// Limits are checked before anything is proposed.
	_, err = client.PutCommand(nil, []byte("v"))
	fmt.Println(err)
	// Output:
	// 17 bytes: 0101086772656574696e670568656c6c6f
	// op 1 key "greeting" value "hello"
	// keel: invalid command: empty key
}

// A transaction applies its operations only if every condition holds.
func ExampleTxnCommand() {
	cmd, err := client.TxnCommand(
		[]client.Cond{
			client.IfAbsent([]byte("lock")),
			client.IfEquals([]byte("owner"), []byte("nobody")),
		},
		[]client.TxnOp{
			client.PutOp([]byte("lock"), []byte("me")),
			client.DeleteOp([]byte("owner")),
		})
	if err != nil {
		panic(err)
	}
	c, _ := sm.Decode(cmd)
	fmt.Printf("%d conditions, %d operations\n", len(c.Conds), len(c.Ops))

	_, err = client.TxnCommand([]client.Cond{client.IfExists([]byte("k"))}, nil)
	fmt.Println(err)

	r, _ := client.DeleteRangeCommand([]byte("a"), []byte("b"))
	fmt.Printf("delete range: %x\n", r)
	_, err = client.DeleteRangeCommand([]byte("b"), []byte("a"))
	fmt.Println(err)
	// Output:
	// 2 conditions, 2 operations
	// keel: invalid command: txn has no operations
	// delete range: 010301610162
	// keel: invalid command: range start must be below its end
}

// Results of SyncPropose carry a code in Value; DecodeResult reads it.
func ExampleDecodeResult() {
	for _, r := range []statemachine.Result{
		{Value: uint64(sm.CodeOK)},
		{Value: uint64(sm.CodePreconditionFailed), Data: []byte{1}},
		{Value: uint64(sm.CodeInvalidCommand), Data: []byte("keel: invalid command: empty key")},
		{Value: uint64(sm.CodeAlreadyApplied)},
	} {
		o := client.DecodeResult(r)
		fmt.Printf("%s failed-cond=%d reason=%q\n", o.Code, o.FailedCond, o.Reason)
	}
	// Output:
	// ok failed-cond=0 reason=""
	// precondition failed failed-cond=1 reason=""
	// invalid command failed-cond=0 reason="keel: invalid command: empty key"
	// already applied failed-cond=0 reason=""
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A Host opens the resources every shard shares, then a NodeHost with
// Keel's defaults; it starts replicas with Keel's factory, and a Client
// talks to one shard. Closing the Host closes the NodeHost first.
func Example_host() {
	// Dragonboat is chatty at Info; keep this example's output clean.
	host.UseSlog(slog.New(slog.NewTextHandler(io.Discard, nil)), slog.LevelWarn)

	dir, err := os.MkdirTemp("", "keel-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	addr := freeAddr()
	h, err := host.Open(host.Options{
		NodeHostDir: filepath.Join(dir, "raft"),
		RaftAddress: addr,
		Keel:        host.Config{RootDir: filepath.Join(dir, "keel")},
		// A faster tick than Keel's 20 ms, for the example only.
		Configure: func(c *config.NodeHostConfig) { c.RTTMillisecond = 5 },
	})
	if err != nil {
		panic(err)
	}
	defer h.Close()
	nh := h.NodeHost()

	// Three shards on one NodeHost, one replica each.
	const shardID, replicaID = 1, 1
	for shard := uint64(1); shard <= 3; shard++ {
		if err := h.StartReplica(map[uint64]string{replicaID: addr}, false, host.ShardConfig(shard, replicaID)); err != nil {
			panic(err)
		}
	}

	// Wait for the replica to elect itself.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, ok, err := nh.GetLeaderID(shardID); err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			panic("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := client.NewClient(nh, shardID)
	if err := c.Put(ctx, []byte("color"), []byte("blue")); err != nil {
		panic(err)
	}
	v, found, err := c.Get(ctx, []byte("color"))
	fmt.Printf("get color: %q found=%v err=%v\n", v, found, err)

	// Compare-and-swap: succeeds once, then its condition fails.
	for i := 0; i < 2; i++ {
		r, err := c.Txn(ctx,
			[]client.Cond{client.IfEquals([]byte("color"), []byte("blue"))},
			[]client.TxnOp{client.PutOp([]byte("color"), []byte("green")), client.PutOp([]byte("changed"), []byte("yes"))})
		fmt.Printf("txn %d: succeeded=%v failed-cond=%d err=%v\n", i, r.Succeeded, r.FailedCond, err)
	}

	page, err := c.Scan(ctx, client.ScanQuery{})
	if err != nil {
		panic(err)
	}
	for _, kv := range page.Pairs {
		fmt.Printf("%s=%s\n", kv.Key, kv.Value)
	}
	if err := c.Delete(ctx, []byte("changed")); err != nil {
		panic(err)
	}
	_, found, _ = c.StaleGet([]byte("changed"))
	fmt.Println("changed found after delete:", found)
	st, err := c.LocalStats(true)
	fmt.Printf("keys=%d err=%v\n", st.Keys, err)
	// The applied index is the replica's own; the test only checks it is
	// consistent with what a hash reports.
	hs, _ := c.LocalHash()
	fmt.Println("hash index matches stats:", hs.AppliedIndex >= st.AppliedIndex, "keys:", hs.Keys)
	fmt.Println("tablets on the shared resources:", h.Factory().Shared().Stats().Engines)
	// Output:
	// get color: "blue" found=true err=<nil>
	// txn 0: succeeded=true failed-cond=0 err=<nil>
	// txn 1: succeeded=false failed-cond=0 err=<nil>
	// changed=yes
	// color=green
	// changed found after delete: false
	// keys=1 err=<nil>
	// hash index matches stats: true keys: 1
	// tablets on the shared resources: 3
}
