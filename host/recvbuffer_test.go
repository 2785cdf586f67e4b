package host

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe" // go:linkname, see dragonboatSnapshotConnection

	"github.com/keel-db/keel/internal/testkit/testutil"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// dragonboatSnapshotConnection and dragonboatSendChunk are Dragonboat's
// own snapshot chunk sender, linked by name as dragonboatTCPConnection is;
// the pointer is a *transport.TCPSnapshotConnection. Its Close sends the
// poison number and waits for the ack.
//
//go:linkname dragonboatSnapshotConnection github.com/lni/dragonboat/v4/internal/transport.NewTCPSnapshotConnection
func dragonboatSnapshotConnection(conn net.Conn, encrypted bool) unsafe.Pointer

//go:linkname dragonboatSendChunk github.com/lni/dragonboat/v4/internal/transport.(*TCPSnapshotConnection).SendChunk
func dragonboatSendChunk(c unsafe.Pointer, chunk pb.Chunk) error

// receiverUnderTest is a started bufferedReceiver on a loopback port whose
// handlers pass what they get to channels.
type receiverUnderTest struct {
	r       *bufferedReceiver
	addr    string
	batches chan pb.MessageBatch
	chunks  chan pb.Chunk
}

func startReceiver(t *testing.T) *receiverUnderTest {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	u := &receiverUnderTest{addr: addr, batches: make(chan pb.MessageBatch, 16), chunks: make(chan pb.Chunk, 16)}
	u.r = newBufferedReceiver(
		func(b pb.MessageBatch) { u.batches <- b },
		func(c pb.Chunk) bool { u.chunks <- c; return c.ChunkId != 99 })
	if err := u.r.start(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.r.stop)
	return u
}

func (u *receiverUnderTest) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", u.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedByPeer waits until the receiver closed c: a read ends in EOF or,
// since the listener sets linger 0 as Dragonboat's does, a reset.
func closedByPeer(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	n, err := c.Read(b[:])
	if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %d bytes, %v; want the receiver to close the connection", n, err)
	}
}

func marshal(t *testing.T, b pb.MessageBatch) []byte {
	t.Helper()
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestBufferedReceiver: batches written by Dragonboat's own sender (three
// or more writes each) and by coalescedConn (one), a 3 MiB batch among
// them, and Dragonboat's snapshot chunks all reach the handlers intact and
// in order, on one connection each; a chunk the handler rejects closes its
// connection, as Dragonboat's receiver does.
func TestBufferedReceiver(t *testing.T) {
	u := startReceiver(t)
	senders := map[string]func(net.Conn, pb.MessageBatch) error{
		"dragonboat": func(c net.Conn, b pb.MessageBatch) error {
			return dragonboatSend(dragonboatTCPConnection(c, false), b)
		},
		"coalesced": func(c net.Conn, b pb.MessageBatch) error { return newCoalescedConn(c).SendMessageBatch(b) },
	}
	for name, send := range senders {
		c := u.dial(t)
		for round := range 2 {
			for i, b := range testBatches() {
				if err := send(c, b); err != nil {
					t.Fatalf("%s: send: %v", name, err)
				}
				got := <-u.batches
				if !bytes.Equal(marshal(t, got), marshal(t, b)) {
					t.Fatalf("%s: round %d batch %d arrived changed", name, round, i)
				}
			}
		}
	}

	sc := dragonboatSnapshotConnection(u.dial(t), false)
	for id := range uint64(3) {
		chunk := pb.Chunk{ShardID: 1, ReplicaID: 2, From: 3, ChunkId: id, ChunkCount: 3, Data: bytes.Repeat([]byte{byte(id)}, 100_000)}
		if err := dragonboatSendChunk(sc, chunk); err != nil {
			t.Fatal(err)
		}
		if got := <-u.chunks; got.ChunkId != id || !bytes.Equal(got.Data, chunk.Data) {
			t.Fatalf("chunk %d arrived as chunk %d, %d bytes", id, got.ChunkId, len(got.Data))
		}
	}

	c := u.dial(t)
	if err := dragonboatSendChunk(dragonboatSnapshotConnection(c, false), pb.Chunk{ShardID: 1, ChunkId: 99, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	<-u.chunks
	closedByPeer(t, c)
}

// TestBufferedReceiverPoison: Dragonboat's poison number (a snapshot sender
// closing) is answered with the ack it waits for, and the connection ends.
func TestBufferedReceiverPoison(t *testing.T) {
	u := startReceiver(t)
	c := u.dial(t)
	if _, err := c.Write([]byte{0, 0}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ack [2]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack != [2]byte{0, 0} {
		t.Fatalf("ack %v, %v; want [0 0]", ack, err)
	}
	closedByPeer(t, c)
}

// TestBufferedReceiverBadFrames: every frame Dragonboat's receiver refuses
// (and one it would try to allocate: a 1 TiB payload) closes the
// connection without reaching a handler; a good batch on another
// connection still arrives.
func TestBufferedReceiverBadFrames(t *testing.T) {
	u := startReceiver(t)
	good := testBatches()[0]
	frame := func() []byte { return frame0(t) }
	resign := func(f []byte) { // a valid header CRC over a changed header
		h := f[2 : 2+wireHeaderSize]
		binary.BigEndian.PutUint32(h[10:], 0)
		binary.BigEndian.PutUint32(h[10:], crc32.ChecksumIEEE(h))
	}
	cases := map[string]func([]byte) []byte{
		"magic":       func(f []byte) []byte { f[0] = 0xAF; return f },
		"header crc":  func(f []byte) []byte { f[5] ^= 1; return f },
		"method":      func(f []byte) []byte { binary.BigEndian.PutUint16(f[2:], 300); resign(f); return f },
		"empty":       func(f []byte) []byte { binary.BigEndian.PutUint64(f[4:], 0); resign(f); return f[:2+wireHeaderSize] },
		"huge":        func(f []byte) []byte { binary.BigEndian.PutUint64(f[4:], 1<<40); resign(f); return f },
		"payload crc": func(f []byte) []byte { f[len(f)-1] ^= 1; return f },
		"not a batch": func([]byte) []byte {
			return encodeWireFrame(append(make([]byte, 2+wireHeaderSize), 0xFF, 0xFF, 0xFF))
		},
	}
	for name, damage := range cases {
		c := u.dial(t)
		if _, err := c.Write(damage(frame())); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		closedByPeer(t, c)
		select {
		case b := <-u.batches:
			t.Fatalf("%s: a damaged frame reached the handler: %+v", name, b)
		default:
		}
	}
	c := u.dial(t)
	if _, err := c.Write(frame()); err != nil {
		t.Fatal(err)
	}
	if got := <-u.batches; !bytes.Equal(marshal(t, got), marshal(t, good)) {
		t.Fatal("the good batch arrived changed")
	}
}

// TestBufferedReceiverStop: stop closes idle and half-sent connections and
// returns; the port no longer accepts. A receiver never started stops too
// (Dragonboat may close a transport whose Start failed).
func TestBufferedReceiverStop(t *testing.T) {
	newBufferedReceiver(nil, nil).stop()
	u := startReceiver(t)
	idle := u.dial(t)
	half := u.dial(t)
	if _, err := half.Write(frame0(t)[:10]); err != nil {
		t.Fatal(err)
	}
	// Both connections must be served before the stop: one still in the
	// listen queue when the stoppable listener stops is accepted by its
	// orphaned Accept goroutine and never served nor closed (as with
	// Dragonboat's own listener), which is not what this test checks.
	testutil.Eventually(t, 10*time.Second, func() error {
		u.r.mu.Lock()
		defer u.r.mu.Unlock()
		if n := len(u.r.conns); n != 2 {
			return fmt.Errorf("%d connections served, want 2", n)
		}
		return nil
	})
	u.r.stop()
	closedByPeer(t, idle)
	closedByPeer(t, half)
	if c, err := net.DialTimeout("tcp", u.addr, time.Second); err == nil {
		_ = c.Close()
		t.Fatal("the stopped receiver still accepts connections")
	}
}

// frame0 is testBatches()[0] framed as on the wire.
func frame0(t *testing.T) []byte {
	t.Helper()
	payload := marshal(t, testBatches()[0])
	return encodeWireFrame(append(make([]byte, 2+wireHeaderSize), payload...))
}
