package sm

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// CommandVersion is the first byte of every command this package encodes.
const CommandVersion byte = 1

// Op identifies a command or a transaction operation.
type Op byte

// Command operations. The numbering is part of the wire format.
const (
	OpPut         Op = 1
	OpDelete      Op = 2
	OpDeleteRange Op = 3
	OpTxn         Op = 4
)

// CondKind is a transaction precondition.
type CondKind byte

// Precondition kinds. The numbering is part of the wire format.
const (
	CondAbsent      CondKind = 1 // the key has no value
	CondExists      CondKind = 2 // the key has a value
	CondValueEquals CondKind = 3 // the key has exactly this value
)

// Limits enforced on every command, at encode time and again at apply time
// (where breaking one yields CodeInvalidCommand on every replica).
const (
	// MaxKeySize bounds a key. Keys are copied into every index block and
	// iterator position, so they are kept small, like etcd's.
	MaxKeySize = 4 << 10
	// MaxValueSize bounds one value.
	MaxValueSize = 1 << 20
	// MaxCommandSize bounds an encoded command. It stays below Dragonboat's
	// default MaxInMemLogSize-friendly entry sizes and well inside its
	// 64 MiB message limit, so one command never dominates a Raft batch.
	MaxCommandSize = 2 << 20
	// MaxTxnItems bounds a transaction's preconditions plus operations.
	MaxTxnItems = 1024
)

// Cond is one transaction precondition.
type Cond struct {
	Kind  CondKind
	Key   []byte
	Value []byte // only for CondValueEquals; Validate refuses it on the others
}

// TxnOp is one write inside a transaction: OpPut or OpDelete.
type TxnOp struct {
	Op    Op
	Key   []byte
	Value []byte // only for OpPut; Validate refuses it on OpDelete
}

// Command is a decoded command. Which fields are set depends on Op:
// Put uses Key and Value; Delete uses Key; DeleteRange uses Key (start) and
// End; Txn uses Conds and Ops. A field the operation does not use has no
// place in the encoding, so Validate refuses a command that sets one rather
// than let Encode drop it without a word. Nil and empty byte strings are
// the same to the codec: an empty unused field is not refused.
type Command struct {
	Op    Op
	Key   []byte
	Value []byte
	End   []byte
	Conds []Cond
	Ops   []TxnOp
}

// Validate checks a command against the limits and shape rules. Decode calls
// it, and the encoders call it so a client learns of a bad command before it
// is proposed.
func (c *Command) Validate() error {
	if err := c.checkUnusedFields(); err != nil {
		return err
	}
	switch c.Op {
	case OpPut:
		if err := checkKey(c.Key); err != nil {
			return err
		}
		return checkValue(c.Value)
	case OpDelete:
		return checkKey(c.Key)
	case OpDeleteRange:
		if err := checkKey(c.Key); err != nil {
			return err
		}
		if err := checkKey(c.End); err != nil {
			return err
		}
		if bytes.Compare(c.Key, c.End) >= 0 {
			return fmt.Errorf("%w: range start must be below its end", ErrInvalidCommand)
		}
		return nil
	case OpTxn:
		if len(c.Conds)+len(c.Ops) > MaxTxnItems {
			return fmt.Errorf("%w: txn has %d items, limit %d", ErrInvalidCommand, len(c.Conds)+len(c.Ops), MaxTxnItems)
		}
		if len(c.Ops) == 0 {
			return fmt.Errorf("%w: txn has no operations", ErrInvalidCommand)
		}
		for _, cd := range c.Conds {
			if cd.Kind < CondAbsent || cd.Kind > CondValueEquals {
				return fmt.Errorf("%w: unknown precondition kind %d", ErrInvalidCommand, cd.Kind)
			}
			if err := checkKey(cd.Key); err != nil {
				return err
			}
			if cd.Kind == CondValueEquals {
				if err := checkValue(cd.Value); err != nil {
					return err
				}
			} else if len(cd.Value) != 0 {
				return fmt.Errorf("%w: %s precondition on key %q carries a value; only a value-equals precondition has one", ErrInvalidCommand, condName(cd.Kind), cd.Key)
			}
		}
		for _, op := range c.Ops {
			switch op.Op {
			case OpPut:
				if err := checkValue(op.Value); err != nil {
					return err
				}
			case OpDelete:
				if len(op.Value) != 0 {
					return fmt.Errorf("%w: txn delete of key %q carries a value; only a put has one", ErrInvalidCommand, op.Key)
				}
			default:
				return fmt.Errorf("%w: txn operation %d is not put or delete", ErrInvalidCommand, op.Op)
			}
			if err := checkKey(op.Key); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown operation %d", ErrInvalidCommand, c.Op)
	}
}

// checkUnusedFields refuses a command that sets a field its operation does
// not encode (for instance a Value on a Delete), which Encode would
// otherwise lose. An unknown operation is left to Validate's switch.
func (c *Command) checkUnusedFields() error {
	var unused string
	switch c.Op {
	case OpPut:
		unused = firstSet(field{"end", len(c.End)}, field{"conditions", len(c.Conds)}, field{"txn operations", len(c.Ops)})
	case OpDelete:
		unused = firstSet(field{"value", len(c.Value)}, field{"end", len(c.End)}, field{"conditions", len(c.Conds)}, field{"txn operations", len(c.Ops)})
	case OpDeleteRange:
		unused = firstSet(field{"value", len(c.Value)}, field{"conditions", len(c.Conds)}, field{"txn operations", len(c.Ops)})
	case OpTxn:
		unused = firstSet(field{"key", len(c.Key)}, field{"value", len(c.Value)}, field{"end", len(c.End)})
	}
	if unused != "" {
		return fmt.Errorf("%w: %s command sets %s, which it does not use", ErrInvalidCommand, opName(c.Op), unused)
	}
	return nil
}

func opName(op Op) string {
	switch op {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpDeleteRange:
		return "delete-range"
	case OpTxn:
		return "txn"
	}
	return fmt.Sprintf("op %d", op)
}

func condName(k CondKind) string {
	switch k {
	case CondAbsent:
		return "absent"
	case CondExists:
		return "exists"
	}
	return fmt.Sprintf("kind %d", k)
}

type field struct {
	name string
	n    int
}

func firstSet(fs ...field) string {
	for _, f := range fs {
		if f.n != 0 {
			return f.name
		}
	}
	return ""
}

func checkKey(k []byte) error {
	if len(k) == 0 {
		return fmt.Errorf("%w: empty key", ErrInvalidCommand)
	}
	if len(k) > MaxKeySize {
		return fmt.Errorf("%w: key of %d bytes, limit %d", ErrInvalidCommand, len(k), MaxKeySize)
	}
	return nil
}

func checkValue(v []byte) error {
	if len(v) > MaxValueSize {
		return fmt.Errorf("%w: value of %d bytes, limit %d", ErrInvalidCommand, len(v), MaxValueSize)
	}
	return nil
}

// Encode validates c and returns its encoding.
func (c *Command) Encode() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b := c.AppendTo(make([]byte, 0, c.encodedSizeHint()))
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: command of %d bytes, limit %d", ErrInvalidCommand, len(b), MaxCommandSize)
	}
	return b, nil
}

func (c *Command) encodedSizeHint() int {
	n := 2 + 3*binary.MaxVarintLen32 + len(c.Key) + len(c.Value) + len(c.End)
	for _, cd := range c.Conds {
		n += 1 + 2*binary.MaxVarintLen32 + len(cd.Key) + len(cd.Value)
	}
	for _, op := range c.Ops {
		n += 1 + 2*binary.MaxVarintLen32 + len(op.Key) + len(op.Value)
	}
	return n
}

// AppendTo appends c's encoding to b without validating it.
func (c *Command) AppendTo(b []byte) []byte {
	b = append(b, CommandVersion, byte(c.Op))
	switch c.Op {
	case OpPut:
		b = appendBytes(b, c.Key)
		b = appendBytes(b, c.Value)
	case OpDelete:
		b = appendBytes(b, c.Key)
	case OpDeleteRange:
		b = appendBytes(b, c.Key)
		b = appendBytes(b, c.End)
	case OpTxn:
		b = binary.AppendUvarint(b, uint64(len(c.Conds)))
		for _, cd := range c.Conds {
			b = append(b, byte(cd.Kind))
			b = appendBytes(b, cd.Key)
			if cd.Kind == CondValueEquals {
				b = appendBytes(b, cd.Value)
			}
		}
		b = binary.AppendUvarint(b, uint64(len(c.Ops)))
		for _, op := range c.Ops {
			b = append(b, byte(op.Op))
			b = appendBytes(b, op.Key)
			if op.Op == OpPut {
				b = appendBytes(b, op.Value)
			}
		}
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// Decode parses and validates an encoded command. The returned command
// aliases data. Every failure wraps ErrInvalidCommand; Decode never panics.
func Decode(data []byte) (Command, error) {
	if len(data) > MaxCommandSize {
		return Command{}, fmt.Errorf("%w: command of %d bytes, limit %d", ErrInvalidCommand, len(data), MaxCommandSize)
	}
	if len(data) < 2 {
		return Command{}, fmt.Errorf("%w: %d bytes is too short", ErrInvalidCommand, len(data))
	}
	if data[0] != CommandVersion {
		return Command{}, fmt.Errorf("%w: unknown command version %d", ErrInvalidCommand, data[0])
	}
	d := decoder{buf: data[2:]}
	c := Command{Op: Op(data[1])}
	switch c.Op {
	case OpPut:
		c.Key = d.bytes()
		c.Value = d.bytes()
	case OpDelete:
		c.Key = d.bytes()
	case OpDeleteRange:
		c.Key = d.bytes()
		c.End = d.bytes()
	case OpTxn:
		n := d.count()
		if n > 0 {
			c.Conds = make([]Cond, 0, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			cd := Cond{Kind: CondKind(d.byte())}
			cd.Key = d.bytes()
			if cd.Kind == CondValueEquals {
				cd.Value = d.bytes()
			}
			c.Conds = append(c.Conds, cd)
		}
		n = d.count()
		if n > 0 {
			c.Ops = make([]TxnOp, 0, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			op := TxnOp{Op: Op(d.byte())}
			op.Key = d.bytes()
			if op.Op == OpPut {
				op.Value = d.bytes()
			}
			c.Ops = append(c.Ops, op)
		}
	default:
		return Command{}, fmt.Errorf("%w: unknown operation %d", ErrInvalidCommand, c.Op)
	}
	if d.err != nil {
		return Command{}, d.err
	}
	if len(d.buf) != 0 {
		return Command{}, fmt.Errorf("%w: %d trailing bytes", ErrInvalidCommand, len(d.buf))
	}
	if err := c.Validate(); err != nil {
		return Command{}, err
	}
	return c, nil
}

// decoder reads length-prefixed fields; the first error sticks and makes
// every later read return nothing.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad length prefix", ErrInvalidCommand)
		return 0
	}
	// binary.Uvarint accepts padded encodings such as 0x80 0x00 for 0.
	// Only the minimal form is valid, so every command has exactly one
	// encoding and Decode followed by Encode gives back the same bytes.
	if n > 1 && d.buf[n-1] == 0 {
		d.err = fmt.Errorf("%w: non-minimal length prefix", ErrInvalidCommand)
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) == 0 {
		d.err = fmt.Errorf("%w: truncated", ErrInvalidCommand)
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.err = fmt.Errorf("%w: field of %d bytes with %d left", ErrInvalidCommand, n, len(d.buf))
		return nil
	}
	v := d.buf[:n:n]
	d.buf = d.buf[n:]
	return v
}

// count reads an item count and bounds it before anything is allocated: each
// item takes at least two bytes, and a transaction has at most MaxTxnItems.
func (d *decoder) count() int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > MaxTxnItems || n > uint64(len(d.buf)/2) {
		d.err = fmt.Errorf("%w: item count %d is out of bounds", ErrInvalidCommand, n)
		return 0
	}
	return int(n)
}
