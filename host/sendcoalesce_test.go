package host

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"unsafe" // go:linkname, see dragonboatTCPConnection

	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/lni/goutils/stringutil"
)

// dragonboatTCPConnection and dragonboatSend are Dragonboat's own batch
// sender (the one coalescedConn replaces), linked by name as dragonboatTCP
// is; the pointer is a *transport.TCPConnection.
//
//go:linkname dragonboatTCPConnection github.com/lni/dragonboat/v4/internal/transport.NewTCPConnection
func dragonboatTCPConnection(conn net.Conn, encrypted bool) unsafe.Pointer

//go:linkname dragonboatSend github.com/lni/dragonboat/v4/internal/transport.(*TCPConnection).SendMessageBatch
func dragonboatSend(c unsafe.Pointer, batch pb.MessageBatch) error

// sent records each Write on the sending end of a pipe and the bytes the
// other end received.
func sent(t *testing.T, send func(net.Conn)) (writes int, got []byte) {
	t.Helper()
	a, b := net.Pipe()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		got, _ = io.ReadAll(b)
	}()
	cw := &countingConn{Conn: a}
	send(cw)
	_ = a.Close()
	wg.Wait()
	return cw.writes, got
}

type countingConn struct {
	net.Conn
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes++
	return c.Conn.Write(p)
}

func testBatches() []pb.MessageBatch {
	big := make([]byte, 3<<20) // over Dragonboat's 2 MiB write chunk
	for i := range big {
		big[i] = byte(i * 7)
	}
	return []pb.MessageBatch{
		{DeploymentId: 7, SourceAddress: "127.0.0.1:1", BinVer: 210,
			Requests: []pb.Message{{Type: pb.Heartbeat, To: 2, From: 1, ShardID: 1, Term: 3, Commit: 9}}},
		{DeploymentId: 7, SourceAddress: "127.0.0.1:1", BinVer: 210,
			Requests: []pb.Message{{Type: pb.Replicate, To: 3, From: 1, ShardID: 4, Term: 3, LogIndex: 10, LogTerm: 3,
				Entries: []pb.Entry{{Term: 3, Index: 11, Cmd: []byte("put k v")}, {Term: 3, Index: 12, Cmd: big}}}}},
	}
}

// TestCoalescedBatchBytes: coalescedConn sends exactly the bytes
// Dragonboat's TCPConnection sends for the same batch (so Dragonboat's
// receiver reads it unchanged), in one Write instead of three or more.
func TestCoalescedBatchBytes(t *testing.T) {
	for i, batch := range testBatches() {
		dbWrites, want := sent(t, func(c net.Conn) {
			if err := dragonboatSend(dragonboatTCPConnection(c, false), batch); err != nil {
				t.Fatal(err)
			}
		})
		ourWrites, got := sent(t, func(c net.Conn) {
			if err := newCoalescedConn(c).SendMessageBatch(batch); err != nil {
				t.Fatal(err)
			}
		})
		if !bytes.Equal(got, want) {
			t.Fatalf("batch %d: %d bytes differ from Dragonboat's %d", i, len(got), len(want))
		}
		if ourWrites != 1 || dbWrites < 3 {
			t.Fatalf("batch %d: %d writes (Dragonboat %d); want 1", i, ourWrites, dbWrites)
		}
	}
}

// TestValidAddressCache: the cached check answers as IsValidAddress does,
// for a repeated address too, and stops caching at its cap.
func TestValidAddressCache(t *testing.T) {
	for _, a := range []string{"127.0.0.1:63001", "localhost:1", "bad address", "", "127.0.0.1:63001", "bad address"} {
		if got, want := validAddress(a), stringutil.IsValidAddress(a); got != want {
			t.Fatalf("validAddress(%q) = %v, want %v", a, got, want)
		}
	}
	for i := 0; i < 2*validAddrCap; i++ {
		validAddress(fmt.Sprintf("127.0.0.%d:%d", i%250+1, 1000+i))
	}
	if n := validAddrsN.Load(); n > validAddrCap {
		t.Fatalf("%d cached addresses, cap %d", n, validAddrCap)
	}
}
