package sm_test

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4/statemachine"
)

// TestDataDriven runs testdata/codec.txt and testdata/apply.txt (etcd
// raft's habit: a file of commands and expected results that reads without
// Go). Rewrite the expectations after a deliberate change with
//
//	go test ./sm -run TestDataDriven -rewrite
//
// and review the diff. Directives:
//
//	encode             input: one command       output: its encoding in hex
//	decode             input: hex bytes         output: the command, or invalid: reason
//	apply [index=N]    input: commands, one a line, applied as consecutive
//	                   entries (from N, default the next index) in one
//	                   Update                    output: index: result, one a line
//	get KEY            output: the value, or not found
//	scan [prefix=P]    output: key = value lines, or (empty)
//	reopen             closes and reopens the state machine; output: applied index
//
// Commands:
//
//	put K V | delete K | delete-range START END
//	txn [if COND {and COND}] then OP {and OP}
//	    COND: absent K | exists K | equals K V      OP: put K V | delete K
//	raw HEX            (apply only) an entry of exactly these bytes
//
// K and V are words, or Go-quoted strings for spaces, empty strings and
// binary bytes ("a b", "", "\x00").
func TestDataDriven(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.txt: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) { runFile(t, path) })
	}
}

func runFile(t *testing.T, path string) {
	dir := t.TempDir()
	var s *sm.StateMachine
	open := func() uint64 {
		s = sm.New(sm.Config{Dir: dir, ShardID: 1, ReplicaID: 1})
		applied, err := s.Open(make(chan struct{}))
		if err != nil {
			t.Fatal(err)
		}
		return applied
	}
	applied := open()
	defer func() { _ = s.Close() }()
	datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
		switch d.Cmd {
		case "encode":
			c, err := parseCommand(strings.TrimSpace(d.Input))
			if err != nil {
				d.Fatalf(t, "%v", err)
			}
			b, err := c.Encode()
			if err != nil {
				return "invalid: " + err.Error() + "\n"
			}
			return spacedHex(b) + "\n"
		case "decode":
			b, err := hex.DecodeString(strings.Join(strings.Fields(d.Input), ""))
			if err != nil {
				d.Fatalf(t, "bad hex: %v", err)
			}
			c, err := sm.Decode(b)
			if err != nil {
				return "invalid: " + err.Error() + "\n"
			}
			return formatCommand(c) + "\n"
		case "apply":
			next := applied + 1
			if d.HasArg("index") {
				d.ScanArgs(t, "index", &next)
			}
			var ents []statemachine.Entry
			for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
				b, err := entryBytes(strings.TrimSpace(line))
				if err != nil {
					d.Fatalf(t, "%q: %v", line, err)
				}
				ents = append(ents, statemachine.Entry{Index: next, Cmd: b})
				next++
			}
			applied = max(applied, next-1)
			out, err := s.Update(ents)
			if err != nil {
				d.Fatalf(t, "Update: %v", err)
			}
			var w strings.Builder
			for _, e := range out {
				fmt.Fprintf(&w, "%d: %s\n", e.Index, formatOutcome(sm.DecodeResult(e.Result)))
			}
			return w.String()
		case "get":
			r, err := s.Lookup(sm.GetQuery{Key: []byte(d.CmdArgs[0].Key)})
			if err != nil {
				d.Fatalf(t, "Lookup: %v", err)
			}
			if g := r.(sm.GetResult); g.Found {
				return quote(g.Value) + "\n"
			}
			return "not found\n"
		case "scan":
			var q sm.ScanQuery
			if d.HasArg("prefix") {
				var p string
				d.ScanArgs(t, "prefix", &p)
				q.Prefix = []byte(p)
			}
			r, err := s.Lookup(q)
			if err != nil {
				d.Fatalf(t, "Lookup: %v", err)
			}
			var w strings.Builder
			for _, kv := range r.(sm.ScanResult).Pairs {
				fmt.Fprintf(&w, "%s = %s\n", quote(kv.Key), quote(kv.Value))
			}
			if w.Len() == 0 {
				return "(empty)\n"
			}
			return w.String()
		case "reopen":
			if err := s.Close(); err != nil {
				d.Fatalf(t, "Close: %v", err)
			}
			applied = open()
			return fmt.Sprintf("applied %d\n", applied)
		default:
			d.Fatalf(t, "unknown directive %q", d.Cmd)
			return ""
		}
	})
}

func spacedHex(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, " ")
}

func formatOutcome(o sm.Outcome) string {
	switch o.Code {
	case sm.CodePreconditionFailed:
		return fmt.Sprintf("precondition failed at condition %d", o.FailedCond)
	case sm.CodeInvalidCommand:
		return "invalid: " + o.Reason
	default:
		return o.Code.String()
	}
}

// entryBytes turns one apply line into an entry's bytes.
func entryBytes(line string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(line, "raw "); ok {
		return hex.DecodeString(strings.Join(strings.Fields(rest), ""))
	}
	c, err := parseCommand(line)
	if err != nil {
		return nil, err
	}
	// AppendTo, unlike Encode, does not validate: a command that breaks a
	// limit still reaches Update, as a faulty client's would.
	return c.AppendTo(nil), nil
}

// quote prints a word as is and anything else Go-quoted, so output
// parses back as input.
func quote(b []byte) string {
	s := string(b)
	if s != "" && !strings.ContainsAny(s, " \"\\") && strconv.Quote(s) == `"`+s+`"` {
		return s
	}
	return strconv.Quote(s)
}

// tokens splits a line into words and Go-quoted strings.
func tokens(line string) ([]string, error) {
	var out []string
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		if line[0] == '"' {
			q, err := strconv.QuotedPrefix(line)
			if err != nil {
				return nil, fmt.Errorf("bad quoted string in %q: %w", line, err)
			}
			s, _ := strconv.Unquote(q)
			out = append(out, s)
			line = line[len(q):]
			continue
		}
		i := strings.IndexByte(line, ' ')
		if i < 0 {
			i = len(line)
		}
		out = append(out, line[:i])
		line = line[i:]
	}
	return out, nil
}

func parseCommand(line string) (sm.Command, error) {
	tok, err := tokens(line)
	if err != nil {
		return sm.Command{}, err
	}
	if len(tok) == 0 {
		return sm.Command{}, fmt.Errorf("empty command")
	}
	args := tok[1:]
	want := func(n int) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %d arguments, got %d", tok[0], n, len(args))
		}
		return nil
	}
	switch tok[0] {
	case "put":
		if err := want(2); err != nil {
			return sm.Command{}, err
		}
		return sm.Command{Op: sm.OpPut, Key: []byte(args[0]), Value: []byte(args[1])}, nil
	case "delete":
		if err := want(1); err != nil {
			return sm.Command{}, err
		}
		return sm.Command{Op: sm.OpDelete, Key: []byte(args[0])}, nil
	case "delete-range":
		if err := want(2); err != nil {
			return sm.Command{}, err
		}
		return sm.Command{Op: sm.OpDeleteRange, Key: []byte(args[0]), End: []byte(args[1])}, nil
	case "txn":
		return parseTxn(args)
	}
	return sm.Command{}, fmt.Errorf("unknown command %q", tok[0])
}

// parseTxn parses [if COND {and COND}] then OP {and OP}.
func parseTxn(args []string) (sm.Command, error) {
	c := sm.Command{Op: sm.OpTxn}
	inOps := false
	if len(args) > 0 && args[0] == "if" {
		args = args[1:]
	} else if len(args) > 0 && args[0] == "then" {
		args, inOps = args[1:], true
	} else {
		return c, fmt.Errorf("txn wants if or then, got %q", args)
	}
	for len(args) > 0 {
		n := 2
		if args[0] == "equals" || args[0] == "put" {
			n = 3
		}
		if len(args) < n {
			return c, fmt.Errorf("txn: %q is short", args)
		}
		item := args[:n]
		args = args[n:]
		if inOps {
			switch item[0] {
			case "put":
				c.Ops = append(c.Ops, sm.TxnOp{Op: sm.OpPut, Key: []byte(item[1]), Value: []byte(item[2])})
			case "delete":
				c.Ops = append(c.Ops, sm.TxnOp{Op: sm.OpDelete, Key: []byte(item[1])})
			default:
				return c, fmt.Errorf("txn: unknown operation %q", item[0])
			}
		} else {
			switch item[0] {
			case "absent":
				c.Conds = append(c.Conds, sm.Cond{Kind: sm.CondAbsent, Key: []byte(item[1])})
			case "exists":
				c.Conds = append(c.Conds, sm.Cond{Kind: sm.CondExists, Key: []byte(item[1])})
			case "equals":
				c.Conds = append(c.Conds, sm.Cond{Kind: sm.CondValueEquals, Key: []byte(item[1]), Value: []byte(item[2])})
			default:
				return c, fmt.Errorf("txn: unknown condition %q", item[0])
			}
		}
		if len(args) == 0 {
			break
		}
		switch args[0] {
		case "and":
		case "then":
			if inOps {
				return c, fmt.Errorf("txn: a second then")
			}
			inOps = true
		default:
			return c, fmt.Errorf("txn: want and or then, got %q", args[0])
		}
		args = args[1:]
	}
	return c, nil
}

// formatCommand prints a command in the syntax parseCommand reads.
func formatCommand(c sm.Command) string {
	switch c.Op {
	case sm.OpPut:
		return "put " + quote(c.Key) + " " + quote(c.Value)
	case sm.OpDelete:
		return "delete " + quote(c.Key)
	case sm.OpDeleteRange:
		return "delete-range " + quote(c.Key) + " " + quote(c.End)
	case sm.OpTxn:
		var conds, ops []string
		for _, cd := range c.Conds {
			switch cd.Kind {
			case sm.CondAbsent:
				conds = append(conds, "absent "+quote(cd.Key))
			case sm.CondExists:
				conds = append(conds, "exists "+quote(cd.Key))
			case sm.CondValueEquals:
				conds = append(conds, "equals "+quote(cd.Key)+" "+quote(cd.Value))
			}
		}
		for _, o := range c.Ops {
			if o.Op == sm.OpPut {
				ops = append(ops, "put "+quote(o.Key)+" "+quote(o.Value))
			} else {
				ops = append(ops, "delete "+quote(o.Key))
			}
		}
		s := "txn "
		if len(conds) > 0 {
			s += "if " + strings.Join(conds, " and ") + " "
		}
		return s + "then " + strings.Join(ops, " and ")
	}
	return fmt.Sprintf("op(%d)", c.Op)
}
