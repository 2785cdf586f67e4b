package host

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"net"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Raft message batches go out in one write.
//
// Dragonboat's TCP transport (internal/transport/tcp.go, writeMessage)
// writes each message batch as three writes: a 2-byte magic number, an
// 18-byte header, then the payload, each with its own write deadline. The
// sockets have TCP_NODELAY, so that is three loopback or network segments
// per batch, and a receiver waiting on the connection wakes for the magic
// number alone, parks again for the header, and again for the payload. A
// replicated write costs a few batches on every replica (the leader's
// replicate to each follower, each follower's ack), so at K = 16 writers
// the transport's send and receive were 25-30% of each keeld's CPU.
//
// coalescingTransport keeps Dragonboat's transport for sending snapshot
// streams and for Name, and replaces the connection that sends message
// batches: the same bytes, built in one buffer and written with one Write.
// A receiver cannot tell the difference (TestCoalescedBatchBytes compares
// the two byte for byte). It also replaces the receive side, Start and
// Close (recvbuffer.go). With MutualTLS the transport is left as it is:
// its connection setup (handshake, certificates) stays Dragonboat's.

// Dragonboat's wire constants for a message batch (internal/transport/tcp.go
// at the version in go.mod).
const (
	wireMagic0, wireMagic1 = 0xAE, 0x7D
	wireHeaderSize         = 18
	wireRaftType           = 100
	// Deadlines as Dragonboat sets them: magic and header, then each
	// 2 MiB (its PerConnectionRecvBufSize) of payload.
	wireHeaderWrite  = 3 * time.Second
	wireChunkWrite   = 5 * time.Second
	wireChunkBytes   = 2 << 20
	wireDialTimeout  = 5 * time.Second // Soft.GetConnectedTimeoutSecond
	wireKeepAlive    = 10 * time.Second
	wireKeepBufBytes = 2 << 20 // Soft.PerConnectionSendBufSize: buffer kept per connection
)

// coalesce wraps Dragonboat's TCP transport t so that message batches are
// sent in one write each and received through a buffer (recvbuffer.go),
// by handler and chunks, the handlers t was made with; with MutualTLS it
// returns t.
func coalesce(nhc config.NodeHostConfig, t raftio.ITransport, handler raftio.MessageHandler, chunks raftio.ChunkHandler) raftio.ITransport {
	if nhc.MutualTLS {
		return t
	}
	return &coalescingTransport{ITransport: t, addr: nhc.GetListenAddress(), recv: newBufferedReceiver(handler, chunks)}
}

// coalescingTransport is Dragonboat's TCP transport with GetConnection,
// Start and Close replaced: Dragonboat's transport never listens (its Start
// is not called); recv serves addr instead.
type coalescingTransport struct {
	raftio.ITransport
	addr string
	recv *bufferedReceiver
}

// Start listens for peers' message batches and snapshot chunks.
func (t *coalescingTransport) Start() error { return t.recv.start(t.addr) }

// Close stops the listener and its connections, then Dragonboat's
// transport (its snapshot senders).
func (t *coalescingTransport) Close() error {
	t.recv.stop()
	return t.ITransport.Close()
}

// GetConnection dials target as Dragonboat's getConnection does (linger 0,
// keep-alive every 10 s) and returns a connection that writes each batch
// at once. ctx is ignored, as Dragonboat's is.
func (t *coalescingTransport) GetConnection(_ context.Context, target string) (raftio.IConnection, error) {
	conn, err := net.DialTimeout("tcp", target, wireDialTimeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		if err := setPeerConn(tc); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	return newCoalescedConn(conn), nil
}

func setPeerConn(c *net.TCPConn) error {
	if err := c.SetLinger(0); err != nil {
		return err
	}
	if err := c.SetKeepAlive(true); err != nil {
		return err
	}
	return c.SetKeepAlivePeriod(wireKeepAlive)
}

// coalescedConn sends message batches on one connection. Dragonboat uses
// each IConnection from one goroutine, so buf needs no lock.
type coalescedConn struct {
	conn net.Conn
	buf  []byte // reused for batches up to wireKeepBufBytes
}

var _ raftio.IConnection = (*coalescedConn)(nil)

func newCoalescedConn(conn net.Conn) *coalescedConn {
	return &coalescedConn{conn: conn}
}

func (c *coalescedConn) Close() { _ = c.conn.Close() }

// SendMessageBatch writes magic, header and payload in one Write.
func (c *coalescedConn) SendMessageBatch(batch pb.MessageBatch) error {
	need := 2 + wireHeaderSize + batch.SizeUpperLimit()
	buf := c.buf
	if cap(buf) < need {
		buf = make([]byte, need)
		if need <= wireKeepBufBytes {
			c.buf = buf
		}
	}
	buf = buf[:need]
	payload := pb.MustMarshalTo(&batch, buf[2+wireHeaderSize:])
	msg := encodeWireFrame(buf[:2+wireHeaderSize+len(payload)])
	chunks := (len(payload) + wireChunkBytes - 1) / wireChunkBytes
	if err := c.conn.SetWriteDeadline(time.Now().Add(wireHeaderWrite + time.Duration(chunks)*wireChunkWrite)); err != nil {
		return err
	}
	_, err := c.conn.Write(msg)
	return err
}

// encodeWireFrame fills the magic number and header in front of the
// payload msg[20:] and returns msg. The header is Dragonboat's
// requestHeader: method, payload size, the header's own CRC32 (computed
// with that field zero) and the payload's CRC32, big endian.
func encodeWireFrame(msg []byte) []byte {
	payload := msg[2+wireHeaderSize:]
	msg[0], msg[1] = wireMagic0, wireMagic1
	h := msg[2 : 2+wireHeaderSize]
	binary.BigEndian.PutUint16(h, wireRaftType)
	binary.BigEndian.PutUint64(h[2:], uint64(len(payload)))
	binary.BigEndian.PutUint32(h[10:], 0)
	binary.BigEndian.PutUint32(h[14:], crc32.ChecksumIEEE(payload))
	binary.BigEndian.PutUint32(h[10:], crc32.ChecksumIEEE(h))
	return msg
}
