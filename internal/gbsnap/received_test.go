package gbsnap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"testing/iotest"

	"github.com/keel-db/keel/internal/testkit/testutil"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// asStreamed turns a .gbsnap into the bytes of the stream Dragonboat sends
// a follower for the same payload: blocks and tail are the same; the header
// is the one its chunk writer puts in the first chunk (internal/rsm
// chunkwriter.go getHeader: no HeaderChecksum, a zero PayloadChecksum, the
// CRC-32 after the marshalled header). That real streams decode is checked
// end to end by integration TestOneSaveSnapshotPerCatchUp, where every
// catch-up image is staged from Dragonboat's chunks.
func asStreamed(t testing.TB, gbsnap []byte) []byte {
	t.Helper()
	old, err := parseEnvHeader(gbsnap[:envHeaderSize])
	must(t, err)
	h := pb.SnapshotHeader{UnreliableTime: 1, PayloadChecksum: []byte{0, 0, 0, 0}, ChecksumType: pb.CRC32IEEE,
		Version: EnvelopeVersion, CompressionType: old.CompressionType}
	data, err := h.Marshal()
	must(t, err)
	hdr := make([]byte, envHeaderSize)
	binary.LittleEndian.PutUint64(hdr, uint64(len(data)))
	copy(hdr[8:], data)
	binary.BigEndian.PutUint32(hdr[8+len(data):], crc32.ChecksumIEEE(data))
	return append(hdr, gbsnap[envHeaderSize:]...)
}

// readReceived decodes a streamed snapshot from r and verifies the Keel
// stream in it, reading to the end.
func readReceived(r io.Reader) (Stream, error) {
	p, err := ReceivedPayload(r)
	if err != nil {
		return Stream{}, err
	}
	s, err := VerifyStream(p)
	if err != nil {
		return Stream{}, err
	}
	if n, err := io.Copy(io.Discard, p); err != nil || n > 0 {
		if err == nil {
			err = envErr("%d trailing bytes", n)
		}
		return Stream{}, err
	}
	return s, nil
}

func TestReceivedPayloadRoundTrip(t *testing.T) {
	small := buildImage(t, 50, 40)
	// Over 2 MiB of incompressible values: several blocks either way.
	large := buildImage(t, 768, 4<<10)
	for _, tc := range []struct {
		name  string
		image string
		ct    pb.CompressionType
	}{
		{"small-snappy", small, pb.Snappy}, {"large-none", large, pb.NoCompression}, {"large-snappy", large, pb.Snappy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile(gbsnapOf(t, writeExport(t, t.TempDir(), tc.image, tc.ct)))
			must(t, err)
			stream := asStreamed(t, b)
			// Whole, and a byte or half a buffer at a time: chunk
			// boundaries must not matter.
			for _, r := range []io.Reader{bytes.NewReader(stream), iotest.HalfReader(bytes.NewReader(stream)), iotest.DataErrReader(bytes.NewReader(stream))} {
				s, err := readReceived(r)
				if err != nil {
					t.Fatal(err)
				}
				if s.ShardID != 3 || s.SnapshotIndex != testIndex || len(s.Files) == 0 {
					t.Fatalf("stream %+v", s)
				}
			}
			// An export's header is not a stream's.
			if _, err := ReceivedPayload(bytes.NewReader(b)); !errors.Is(err, ErrDamaged) {
				t.Fatalf("an export read as a stream: got %v, want ErrDamaged", err)
			}
		})
	}
}

// TestReceivedPayloadCatchesDamage flips random bytes of a streamed
// snapshot, cuts it short and extends it: every change is caught, as an
// error and never a panic, by the time the payload is read to its end.
func TestReceivedPayloadCatchesDamage(t *testing.T) {
	b, err := os.ReadFile(gbsnapOf(t, writeExport(t, t.TempDir(), buildImage(t, 600, 4<<10), pb.Snappy)))
	must(t, err)
	orig := asStreamed(t, b)
	r := rand.New(rand.NewPCG(testutil.Seed(t), 5))
	bad := func(what string, s []byte) {
		t.Helper()
		if _, err := readReceived(bytes.NewReader(s)); err == nil {
			t.Fatalf("%s: read without an error", what)
		}
	}
	for i := 0; i < 200; i++ {
		s := bytes.Clone(orig)
		off := r.IntN(len(s))
		switch {
		case i < 20:
			off = r.IntN(64) // the header
		case i < 40:
			off = len(s) - 1 - r.IntN(envTailSize+envChecksumSize) // tail, last checksum
		}
		s[off] ^= byte(1 + r.IntN(255))
		bad("flip", s)
	}
	for _, cut := range []int{1, envTailSize, envTailSize + 1, len(orig) / 2, len(orig) - envHeaderSize} {
		bad("cut", orig[:len(orig)-cut])
	}
	bad("extended", append(bytes.Clone(orig), 0))
	bad("empty", nil)
}

func FuzzReceivedPayload(f *testing.F) {
	b, err := os.ReadFile(gbsnapOf(f, smallExport(f)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(asStreamed(f, b))
	f.Fuzz(func(t *testing.T, s []byte) {
		_, _ = readReceived(bytes.NewReader(s))
	})
}
