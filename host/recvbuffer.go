package host

import (
	"bufio"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/lni/goutils/netutil"
)

// Raft message batches are read through a buffer.
//
// Dragonboat's TCP transport (internal/transport/tcp.go, serveConn) reads
// each message batch or snapshot chunk with three reads: the 2-byte magic
// number, the 18-byte header, the payload, each after a SetReadDeadline of
// its own. Once host/sendcoalesce.go sends a batch in one write, it
// arrives whole, and the three reads are three system calls and three
// timer updates for bytes already received. bufferedReceiver serves the
// same listener with a buffered reader: a batch that arrived whole costs one
// read, and a read deadline is set only while a message is incomplete.
//
// It accepts exactly what Dragonboat's serveConn accepts (same magic
// number, header checks and CRCs, same handlers for batches and chunks)
// and answers Dragonboat's poison number (a sender closing its
// connection) with Dragonboat's ack; TestBufferedReceiver feeds it
// Dragonboat's own senders. Unlike serveConn it refuses a payload larger
// than maxWirePayload instead of allocating whatever size a header claims.

// Dragonboat's receive constants (internal/transport/tcp.go at the version
// in go.mod).
const (
	wireSnapshotType = 200
	// wireHeaderRead and wirePayloadRead are Dragonboat's read deadlines
	// for the header and for each PerConnectionRecvBufSize of payload.
	wireHeaderRead  = 2 * time.Second
	wirePayloadRead = 5 * time.Second
	// maxWirePayload bounds one payload: Dragonboat's largest entry and
	// message batch are 64 MiB (settings.MaxMessageBatchSize), a snapshot
	// chunk 2 MiB.
	maxWirePayload = 128 << 20
	// wireReadBuf is each connection's read buffer: small batches (most
	// of them) arrive in one read.
	wireReadBuf = 64 << 10
)

// errWireFrame is a frame serveConn would refuse too: the connection closes.
var errWireFrame = errors.New("keel: bad raft message frame")

// bufferedReceiver is the listener side of a coalescingTransport. It is
// started at most once; stop closes stopc (which stops the listener) and
// every connection and waits for their goroutines, and may come without a
// start. Each connection has one goroutine, so the handlers see one
// connection's messages in order, as with Dragonboat's receiver.
type bufferedReceiver struct {
	handler raftio.MessageHandler
	chunks  raftio.ChunkHandler
	stopc   chan struct{}
	wg      sync.WaitGroup
	// mu guards conns, the open connections, and stopped.
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	stopped bool
}

func newBufferedReceiver(handler raftio.MessageHandler, chunks raftio.ChunkHandler) *bufferedReceiver {
	return &bufferedReceiver{handler: handler, chunks: chunks, stopc: make(chan struct{}), conns: map[net.Conn]struct{}{}}
}

// start listens on addr as Dragonboat's transport does (its stoppable
// listener: every IPv4 address a host name resolves to, TCP keep-alive).
func (r *bufferedReceiver) start(addr string) error {
	ln, err := netutil.NewStoppableListener(addr, nil, r.stopc)
	if err != nil {
		return err
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() { _ = ln.Close() }()
		pause := 5 * time.Millisecond
		for {
			conn, err := ln.Accept()
			if errors.Is(err, netutil.ErrListenerStopped) {
				return
			}
			if err != nil {
				// A failed accept (EMFILE: out of descriptors) is
				// retried after a growing pause, as net/http's
				// server does; Dragonboat's transport panics.
				select {
				case <-r.stopc:
					return
				case <-time.After(pause):
				}
				pause = min(2*pause, time.Second)
				continue
			}
			pause = 5 * time.Millisecond
			if !r.track(conn) {
				_ = conn.Close()
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(conn)
				r.untrack(conn)
				_ = conn.Close()
			}()
		}
	}()
	return nil
}

func (r *bufferedReceiver) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *bufferedReceiver) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// stop closes the listener and the open connections and waits for their
// goroutines (each handler call in progress finishes first).
func (r *bufferedReceiver) stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	close(r.stopc)
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// serve reads frames from conn until it closes or sends a bad frame.
func (r *bufferedReceiver) serve(conn net.Conn) {
	br := bufio.NewReaderSize(conn, wireReadBuf)
	var hdr [2 + wireHeaderSize]byte
	var keep []byte // reused for payloads up to wireKeepBufBytes
	for {
		// The magic number is awaited with no deadline: serveConn's
		// one-second deadline only makes it loop.
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		if hdr[0] == 0 && hdr[1] == 0 {
			// Dragonboat's poison: the sender closes; it waits for
			// the same two bytes back.
			_ = conn.SetWriteDeadline(time.Now().Add(wireHeaderWrite))
			_, _ = conn.Write(hdr[:2])
			return
		}
		if hdr[0] != wireMagic0 || hdr[1] != wireMagic1 {
			return
		}
		deadline := false
		if br.Buffered() < wireHeaderSize {
			deadline = true
			if conn.SetReadDeadline(time.Now().Add(wireHeaderRead)) != nil {
				return
			}
		}
		if _, err := io.ReadFull(br, hdr[2:]); err != nil {
			return
		}
		method, size, crc, err := decodeWireHeader(hdr[2:])
		if err != nil {
			return
		}
		var payload []byte
		if size <= uint64(cap(keep)) {
			payload = keep[:size]
		} else {
			payload = make([]byte, size)
			if size <= wireKeepBufBytes {
				keep = payload
			}
		}
		if uint64(br.Buffered()) < size {
			deadline = true
			chunks := (size + wireChunkBytes - 1) / wireChunkBytes
			if conn.SetReadDeadline(time.Now().Add(time.Duration(chunks)*wirePayloadRead)) != nil {
				return
			}
		}
		if _, err := io.ReadFull(br, payload); err != nil {
			return
		}
		if deadline && conn.SetReadDeadline(time.Time{}) != nil {
			return
		}
		if crc32.ChecksumIEEE(payload) != crc {
			return
		}
		if !r.dispatch(method, payload) {
			return
		}
	}
}

// dispatch hands a payload to its handler as serveConn does; false closes
// the connection (a payload that does not decode, a rejected chunk).
func (r *bufferedReceiver) dispatch(method uint16, payload []byte) bool {
	if method == wireRaftType {
		var batch pb.MessageBatch
		if batch.Unmarshal(payload) != nil {
			return false
		}
		r.handler(batch)
		return true
	}
	var chunk pb.Chunk
	if chunk.Unmarshal(payload) != nil {
		return false
	}
	return r.chunks(chunk)
}

// decodeWireHeader checks and decodes Dragonboat's requestHeader (see
// encodeWireFrame): a known method, a payload of 1 to maxWirePayload bytes,
// the header's own CRC32.
func decodeWireHeader(h []byte) (method uint16, size uint64, payloadCRC uint32, err error) {
	method = binary.BigEndian.Uint16(h)
	size = binary.BigEndian.Uint64(h[2:])
	headerCRC := binary.BigEndian.Uint32(h[10:])
	payloadCRC = binary.BigEndian.Uint32(h[14:])
	var zeroed [wireHeaderSize]byte
	copy(zeroed[:], h)
	binary.BigEndian.PutUint32(zeroed[10:], 0)
	switch {
	case crc32.ChecksumIEEE(zeroed[:]) != headerCRC,
		method != wireRaftType && method != wireSnapshotType,
		size == 0 || size > maxWirePayload:
		return 0, 0, 0, errWireFrame
	}
	return method, size, payloadCRC, nil
}
