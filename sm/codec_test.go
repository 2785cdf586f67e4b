package sm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/keel-db/keel/internal/testkit/testutil"
)

// sameCommand compares two commands field by field, treating nil and empty
// byte strings alike (the codec does not distinguish them) and ignoring a
// condition's Value unless the kind carries one.
func sameCommand(a, b Command) error {
	if a.Op != b.Op {
		return fmt.Errorf("op %d != %d", a.Op, b.Op)
	}
	if !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.Value, b.Value) || !bytes.Equal(a.End, b.End) {
		return fmt.Errorf("key/value/end differ: %q/%q/%q vs %q/%q/%q", a.Key, a.Value, a.End, b.Key, b.Value, b.End)
	}
	if len(a.Conds) != len(b.Conds) || len(a.Ops) != len(b.Ops) {
		return fmt.Errorf("item counts differ: %d/%d vs %d/%d", len(a.Conds), len(a.Ops), len(b.Conds), len(b.Ops))
	}
	for i := range a.Conds {
		x, y := a.Conds[i], b.Conds[i]
		if x.Kind != y.Kind || !bytes.Equal(x.Key, y.Key) {
			return fmt.Errorf("cond %d differs: %+v vs %+v", i, x, y)
		}
		if x.Kind == CondValueEquals && !bytes.Equal(x.Value, y.Value) {
			return fmt.Errorf("cond %d value differs", i)
		}
	}
	for i := range a.Ops {
		x, y := a.Ops[i], b.Ops[i]
		if x.Op != y.Op || !bytes.Equal(x.Key, y.Key) {
			return fmt.Errorf("op %d differs: %+v vs %+v", i, x, y)
		}
		if x.Op == OpPut && !bytes.Equal(x.Value, y.Value) {
			return fmt.Errorf("op %d value differs", i)
		}
	}
	return nil
}

// roundTrip encodes c, decodes it, checks both agree and that re-encoding
// is byte-identical, and returns the encoding.
func roundTrip(t *testing.T, c Command) []byte {
	t.Helper()
	enc, err := c.Encode()
	if err != nil {
		t.Fatalf("encode %+v: %v", c.Op, err)
	}
	if got := c.AppendTo([]byte("prefix")); !bytes.Equal(got[6:], enc) || string(got[:6]) != "prefix" {
		t.Fatalf("AppendTo does not append the encoding")
	}
	dec, err := Decode(enc)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if err := sameCommand(c, dec); err != nil {
		t.Fatalf("decoded command differs: %v", err)
	}
	again, err := dec.Encode()
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	if !bytes.Equal(again, enc) {
		t.Fatalf("re-encoding differs:\n%x\n%x", enc, again)
	}
	return enc
}

func rep(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// validCommands is a table covering every command kind and the edges of
// each limit that must still be accepted.
func validCommands() map[string]Command {
	k, v := []byte("key"), []byte("value")
	return map[string]Command{
		"put":                   {Op: OpPut, Key: k, Value: v},
		"put empty value":       {Op: OpPut, Key: k, Value: nil},
		"put binary key":        {Op: OpPut, Key: []byte{0x00, 0xff, 0x00}, Value: []byte{0}},
		"put max key":           {Op: OpPut, Key: rep('k', MaxKeySize), Value: v},
		"put max value":         {Op: OpPut, Key: k, Value: rep('v', MaxValueSize)},
		"delete":                {Op: OpDelete, Key: k},
		"delete 0xff key":       {Op: OpDelete, Key: rep(0xff, 9)},
		"delete range":          {Op: OpDeleteRange, Key: []byte("a"), End: []byte("b")},
		"delete range adjacent": {Op: OpDeleteRange, Key: []byte("a"), End: []byte("a\x00")},
		"txn one op":            {Op: OpTxn, Ops: []TxnOp{{Op: OpDelete, Key: k}}},
		"txn all kinds": {Op: OpTxn,
			Conds: []Cond{
				{Kind: CondAbsent, Key: []byte("a")},
				{Kind: CondExists, Key: []byte("b")},
				{Kind: CondValueEquals, Key: []byte("c"), Value: []byte("x")},
				{Kind: CondValueEquals, Key: []byte("d"), Value: nil},
			},
			Ops: []TxnOp{
				{Op: OpPut, Key: []byte("a"), Value: []byte("1")},
				{Op: OpPut, Key: []byte("e"), Value: nil},
				{Op: OpDelete, Key: []byte("b")},
			}},
		"txn max items": {Op: OpTxn, Conds: manyConds(MaxTxnItems - 1), Ops: []TxnOp{{Op: OpDelete, Key: k}}},
		"txn max ops":   {Op: OpTxn, Ops: manyOps(MaxTxnItems)},
	}
}

func manyConds(n int) []Cond {
	out := make([]Cond, n)
	for i := range out {
		out[i] = Cond{Kind: CondKind(1 + i%3), Key: []byte(fmt.Sprintf("c%d", i))}
		if out[i].Kind == CondValueEquals {
			out[i].Value = []byte("v")
		}
	}
	return out
}

func manyOps(n int) []TxnOp {
	out := make([]TxnOp, n)
	for i := range out {
		out[i] = TxnOp{Op: Op(1 + i%2), Key: []byte(fmt.Sprintf("o%d", i))}
		if out[i].Op == OpPut {
			out[i].Value = []byte("v")
		}
	}
	return out
}

func TestCodecRoundTripTable(t *testing.T) {
	for name, c := range validCommands() {
		t.Run(name, func(t *testing.T) { roundTrip(t, c) })
	}
}

// TestCodecRefusesUnusedFields: a field the operation does not encode (a
// Value on an absent/exists condition or a delete, and the like) used to be
// dropped by Encode without a word. Encode must refuse it instead.
func TestCodecRefusesUnusedFields(t *testing.T) {
	k, v := []byte("k"), []byte("v")
	del := []TxnOp{{Op: OpDelete, Key: k}}
	cases := map[string]Command{
		"absent cond with value": {Op: OpTxn, Conds: []Cond{{Kind: CondAbsent, Key: k, Value: v}}, Ops: del},
		"exists cond with value": {Op: OpTxn, Conds: []Cond{{Kind: CondExists, Key: k, Value: v}}, Ops: del},
		"txn delete with value":  {Op: OpTxn, Ops: []TxnOp{{Op: OpDelete, Key: k, Value: v}}},
		"later bad item": {Op: OpTxn,
			Conds: []Cond{{Kind: CondValueEquals, Key: k, Value: v}, {Kind: CondExists, Key: k, Value: v}},
			Ops:   []TxnOp{{Op: OpPut, Key: k, Value: v}}},
		"put with end":              {Op: OpPut, Key: k, Value: v, End: v},
		"put with conds":            {Op: OpPut, Key: k, Value: v, Conds: []Cond{{Kind: CondExists, Key: k}}},
		"put with ops":              {Op: OpPut, Key: k, Value: v, Ops: del},
		"delete with value":         {Op: OpDelete, Key: k, Value: v},
		"delete with end":           {Op: OpDelete, Key: k, End: v},
		"delete with ops":           {Op: OpDelete, Key: k, Ops: del},
		"delete range with value":   {Op: OpDeleteRange, Key: []byte("a"), End: []byte("b"), Value: v},
		"delete range with conds":   {Op: OpDeleteRange, Key: []byte("a"), End: []byte("b"), Conds: []Cond{{Kind: CondExists, Key: k}}},
		"txn with key":              {Op: OpTxn, Key: k, Ops: del},
		"txn with value":            {Op: OpTxn, Value: v, Ops: del},
		"txn with end":              {Op: OpTxn, End: v, Ops: del},
		"delete range with ops set": {Op: OpDeleteRange, Key: []byte("a"), End: []byte("b"), Ops: del},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			enc, err := c.Encode()
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Encode: got %x, %v; want ErrInvalidCommand", enc, err)
			}
			if err := c.Validate(); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Validate: got %v, want ErrInvalidCommand", err)
			}
		})
	}
	// The plugin helpers build only valid shapes; an empty unused field
	// carries nothing and is still accepted, since nil and empty are the
	// same to the codec.
	roundTrip(t, Command{Op: OpTxn,
		Conds: []Cond{{Kind: CondAbsent, Key: k, Value: []byte{}}},
		Ops:   []TxnOp{{Op: OpDelete, Key: k, Value: []byte{}}}})
	roundTrip(t, Command{Op: OpDelete, Key: k, Value: []byte{}, End: []byte{}})
}

// TestDecodeRefusesValueWhereFormatHasNone: bytes that put a value after an
// absent/exists condition or a delete op do not decode, so no replica
// applies such a command either.
func TestDecodeRefusesValueWhereFormatHasNone(t *testing.T) {
	txn := func(body ...byte) []byte { return append([]byte{CommandVersion, byte(OpTxn)}, body...) }
	cases := map[string][]byte{
		"absent cond with value": txn(1, byte(CondAbsent), 1, 'k', 1, 'v', 1, byte(OpDelete), 1, 'k'),
		"exists cond with value": txn(1, byte(CondExists), 1, 'k', 1, 'v', 1, byte(OpDelete), 1, 'k'),
		"txn delete with value":  txn(0, 1, byte(OpDelete), 1, 'k', 1, 'v'),
		"delete with value":      {CommandVersion, byte(OpDelete), 1, 'k', 1, 'v'},
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			if c, err := Decode(data); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Decode(%x) = %+v, %v; want ErrInvalidCommand", data, c, err)
			}
			checkDecodeCanonical(t, data)
		})
	}
}

func randBytes(r *rand.Rand, min, max int) []byte {
	n := min + r.IntN(max-min+1)
	b := make([]byte, n)
	for i := range b {
		// Mostly a small alphabet, so keys collide and ranges are non-trivial,
		// with the namespace-like bytes 0x00, 0x01 and 0xff thrown in.
		switch r.IntN(8) {
		case 0:
			b[i] = 0x00
		case 1:
			b[i] = 0xff
		case 2:
			b[i] = 0x01
		default:
			b[i] = 'a' + byte(r.IntN(4))
		}
	}
	return b
}

// randCommand returns a random valid command.
func randCommand(r *rand.Rand) Command {
	switch r.IntN(4) {
	case 0:
		return Command{Op: OpPut, Key: randBytes(r, 1, 12), Value: randBytes(r, 0, 40)}
	case 1:
		return Command{Op: OpDelete, Key: randBytes(r, 1, 12)}
	case 2:
		a, b := randBytes(r, 1, 6), randBytes(r, 1, 6)
		switch c := bytes.Compare(a, b); {
		case c == 0:
			b = append(b, 0)
		case c > 0:
			a, b = b, a
		}
		return Command{Op: OpDeleteRange, Key: a, End: b}
	default:
		c := Command{Op: OpTxn}
		for i := r.IntN(4); i > 0; i-- {
			cd := Cond{Kind: CondKind(1 + r.IntN(3)), Key: randBytes(r, 1, 6)}
			if cd.Kind == CondValueEquals {
				cd.Value = randBytes(r, 0, 8)
			}
			c.Conds = append(c.Conds, cd)
		}
		for i := 1 + r.IntN(4); i > 0; i-- {
			op := TxnOp{Op: Op(1 + r.IntN(2)), Key: randBytes(r, 1, 6)}
			if op.Op == OpPut {
				op.Value = randBytes(r, 0, 8)
			}
			c.Ops = append(c.Ops, op)
		}
		return c
	}
}

func TestCodecRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(testutil.Seed(t), 1))
	n := 5000
	if testing.Short() {
		n = 500
	}
	for i := 0; i < n; i++ {
		c := randCommand(r)
		enc := roundTrip(t, c)
		// Corrupt one byte: Decode must not panic, and if it accepts the
		// result it must be canonical.
		bad := append([]byte(nil), enc...)
		bad[r.IntN(len(bad))] ^= byte(1 + r.IntN(255))
		checkDecodeCanonical(t, bad)
	}
}

// checkDecodeCanonical is the fuzz property: Decode either fails with
// ErrInvalidCommand or accepts a canonical encoding.
func checkDecodeCanonical(t testing.TB, data []byte) {
	t.Helper()
	c, err := Decode(data)
	if err != nil {
		if !errors.Is(err, ErrInvalidCommand) {
			t.Fatalf("Decode(%x) error does not wrap ErrInvalidCommand: %v", data, err)
		}
		return
	}
	enc, err := c.Encode()
	if err != nil {
		t.Fatalf("Decode(%x) accepted a command Encode rejects: %v", data, err)
	}
	if !bytes.Equal(enc, data) {
		t.Fatalf("Decode(%x) then Encode gave %x", data, enc)
	}
}

func TestCodecRejects(t *testing.T) {
	k := []byte("k")
	big := func(n int) []byte { return rep('x', n) }
	cases := map[string]Command{
		"unknown op 0":           {Op: 0, Key: k},
		"unknown op 5":           {Op: 5, Key: k},
		"put empty key":          {Op: OpPut, Key: nil, Value: []byte("v")},
		"put key too big":        {Op: OpPut, Key: big(MaxKeySize + 1)},
		"put value too big":      {Op: OpPut, Key: k, Value: big(MaxValueSize + 1)},
		"delete empty key":       {Op: OpDelete},
		"delete key too big":     {Op: OpDelete, Key: big(MaxKeySize + 1)},
		"range start == end":     {Op: OpDeleteRange, Key: []byte("b"), End: []byte("b")},
		"range start > end":      {Op: OpDeleteRange, Key: []byte("c"), End: []byte("b")},
		"range empty start":      {Op: OpDeleteRange, Key: nil, End: []byte("b")},
		"range empty end":        {Op: OpDeleteRange, Key: []byte("a"), End: nil},
		"range end too big":      {Op: OpDeleteRange, Key: []byte("a"), End: big(MaxKeySize + 1)},
		"txn no ops":             {Op: OpTxn, Conds: []Cond{{Kind: CondExists, Key: k}}},
		"txn too many items":     {Op: OpTxn, Conds: manyConds(1), Ops: manyOps(MaxTxnItems)},
		"txn cond kind 0":        {Op: OpTxn, Conds: []Cond{{Kind: 0, Key: k}}, Ops: manyOps(1)},
		"txn cond kind 4":        {Op: OpTxn, Conds: []Cond{{Kind: 4, Key: k}}, Ops: manyOps(1)},
		"txn cond empty key":     {Op: OpTxn, Conds: []Cond{{Kind: CondAbsent}}, Ops: manyOps(1)},
		"txn cond value too big": {Op: OpTxn, Conds: []Cond{{Kind: CondValueEquals, Key: k, Value: big(MaxValueSize + 1)}}, Ops: manyOps(1)},
		"txn op delete range":    {Op: OpTxn, Ops: []TxnOp{{Op: OpDeleteRange, Key: k}}},
		"txn op txn":             {Op: OpTxn, Ops: []TxnOp{{Op: OpTxn, Key: k}}},
		"txn op empty key":       {Op: OpTxn, Ops: []TxnOp{{Op: OpPut}}},
		"txn op value too big":   {Op: OpTxn, Ops: []TxnOp{{Op: OpPut, Key: k, Value: big(MaxValueSize + 1)}}},
		"txn too large": {Op: OpTxn, Ops: []TxnOp{
			{Op: OpPut, Key: []byte("a"), Value: big(MaxValueSize)},
			{Op: OpPut, Key: []byte("b"), Value: big(MaxValueSize)},
		}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := c.Encode(); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Encode: got %v, want ErrInvalidCommand", err)
			}
			// The decoder must reject the same command when it arrives
			// unvalidated (AppendTo skips the checks), as a replica would
			// receive it from a client that bypassed Encode.
			if _, err := Decode(c.AppendTo(nil)); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Decode: got %v, want ErrInvalidCommand", err)
			}
		})
	}
}

// TestCodecCommandSizeLimit pins the boundary: exactly MaxCommandSize is
// accepted by both sides, one byte more by neither.
func TestCodecCommandSizeLimit(t *testing.T) {
	mk := func(size int) Command {
		c := Command{Op: OpTxn, Ops: []TxnOp{
			{Op: OpPut, Key: []byte("a"), Value: rep('x', MaxValueSize)},
			{Op: OpPut, Key: []byte("b"), Value: nil},
		}}
		over := size - len(c.AppendTo(nil))
		// Grow the second value until the encoding has the wanted size
		// (its length prefix grows with it, hence the loop).
		for len(c.AppendTo(nil)) < size {
			c.Ops[1].Value = rep('y', len(c.Ops[1].Value)+over)
			over = size - len(c.AppendTo(nil))
			if over < 0 {
				c.Ops[1].Value = c.Ops[1].Value[:len(c.Ops[1].Value)+over]
				over = 0
			}
			if over == 0 {
				break
			}
		}
		if got := len(c.AppendTo(nil)); got != size {
			t.Fatalf("built a command of %d bytes, want %d", got, size)
		}
		return c
	}
	at := mk(MaxCommandSize)
	roundTrip(t, at)
	over := mk(MaxCommandSize + 1)
	if _, err := over.Encode(); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("Encode over the size limit: %v", err)
	}
	if _, err := Decode(over.AppendTo(nil)); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("Decode over the size limit: %v", err)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	valid, err := (&Command{Op: OpPut, Key: []byte("k"), Value: []byte("v")}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	txn := func(body ...byte) []byte { return append([]byte{CommandVersion, byte(OpTxn)}, body...) }
	cases := map[string][]byte{
		"nil":                   nil,
		"one byte":              {CommandVersion},
		"version 0":             append([]byte{0}, valid[1:]...),
		"version 2":             append([]byte{2}, valid[1:]...),
		"version 0xff":          append([]byte{0xff}, valid[1:]...),
		"op 0":                  {CommandVersion, 0, 1, 'k'},
		"op 0xff":               {CommandVersion, 0xff, 1, 'k'},
		"trailing byte":         append(append([]byte(nil), valid...), 0),
		"trailing bytes":        append(append([]byte(nil), valid...), "junk"...),
		"length past end":       {CommandVersion, byte(OpDelete), 5, 'k'},
		"varint overflow":       append([]byte{CommandVersion, byte(OpDelete)}, rep(0xff, 11)...),
		"padded varint":         {CommandVersion, byte(OpDelete), 0x81, 0x00, 'k'},
		"padded zero varint":    {CommandVersion, byte(OpPut), 1, 'k', 0x80, 0x00},
		"txn huge cond count":   txn(binary.AppendUvarint(nil, 1<<62)...),
		"txn huge op count":     txn(append([]byte{0}, binary.AppendUvarint(nil, 1<<40)...)...),
		"txn count > items":     txn(0, 3, byte(OpDelete), 1, 'k'),
		"txn count 1025":        txn(append([]byte{0}, binary.AppendUvarint(nil, MaxTxnItems+1)...)...),
		"txn missing op count":  txn(0),
		"txn cond missing key":  txn(1, byte(CondAbsent)),
		"txn equals no value":   txn(1, byte(CondValueEquals), 1, 'k', 1, byte(OpDelete), 1, 'k'),
		"txn put missing value": txn(0, 1, byte(OpPut), 1, 'k'),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode(data); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Decode(%x): got %v, want ErrInvalidCommand", data, err)
			}
		})
	}
	// Oversized input is refused before it is parsed.
	if _, err := Decode(make([]byte, MaxCommandSize+1)); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("oversized input: %v", err)
	}
}

// TestDecodeTruncated cuts every valid encoding at every byte offset: no
// proper prefix of a command is itself a command.
func TestDecodeTruncated(t *testing.T) {
	for name, c := range validCommands() {
		enc, err := c.Encode()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(enc) > 4096 {
			// Large values add offsets but no new framing; cut the framing
			// region at every offset and the payload at a stride.
			for i := 0; i < len(enc); i += 1 + i/64 {
				if _, err := Decode(enc[:i]); !errors.Is(err, ErrInvalidCommand) {
					t.Fatalf("%s cut at %d of %d: got %v", name, i, len(enc), err)
				}
			}
			continue
		}
		for i := 0; i < len(enc); i++ {
			if _, err := Decode(enc[:i]); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("%s cut at %d of %d: got %v", name, i, len(enc), err)
			}
		}
	}
}

func TestDecodeAliasesInput(t *testing.T) {
	// Documented: the decoded command aliases its input. Fields must be
	// capacity-limited so appending to one cannot overwrite the next.
	enc, _ := (&Command{Op: OpPut, Key: []byte("k"), Value: []byte("v")}).Encode()
	c, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(c.Key, 'X')
	if string(c.Value) != "v" {
		t.Fatalf("appending to Key overwrote Value: %q", c.Value)
	}
}

func TestDecodeResult(t *testing.T) {
	if o := DecodeResult(okResult()); o.Code != CodeOK {
		t.Fatalf("ok: %+v", o)
	}
	if o := DecodeResult(preconditionResult(7)); o.Code != CodePreconditionFailed || o.FailedCond != 7 {
		t.Fatalf("precondition: %+v", o)
	}
	if o := DecodeResult(invalidResult(errors.New("why"))); o.Code != CodeInvalidCommand || o.Reason != "why" {
		t.Fatalf("invalid: %+v", o)
	}
	for c, s := range map[Code]string{CodeOK: "ok", CodePreconditionFailed: "precondition failed",
		CodeInvalidCommand: "invalid command", CodeAlreadyApplied: "already applied", 99: "code(99)"} {
		if c.String() != s {
			t.Fatalf("Code(%d).String() = %q, want %q", uint64(c), c.String(), s)
		}
	}
}

func TestPrefixEndAndRange(t *testing.T) {
	for p, want := range map[string]string{"a": "b", "a\xff": "b", "\xff\xff": "", "": "", "ab\x00": "ab\x01"} {
		got := PrefixEnd([]byte(p))
		if string(got) != want || (want == "" && got != nil) {
			t.Fatalf("PrefixEnd(%q) = %q, want %q", p, got, want)
		}
	}
	s, e := ScanQuery{Prefix: []byte("b"), Start: []byte("a"), End: []byte("z")}.Range()
	if string(s) != "b" || string(e) != "c" {
		t.Fatalf("prefix range = [%q, %q)", s, e)
	}
	s, e = ScanQuery{Prefix: []byte("b"), Start: []byte("b5"), End: []byte("b7")}.Range()
	if string(s) != "b5" || string(e) != "b7" {
		t.Fatalf("narrowed prefix range = [%q, %q)", s, e)
	}
}
