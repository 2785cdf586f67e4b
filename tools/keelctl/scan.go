package main

import (
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/keel-db/keel/sm"
	"github.com/spf13/cobra"
)

// defaultWidth is where scan cuts a value in text output unless --full.
const defaultWidth = 80

// setBytes sets name to b as a string when it is UTF-8, else name_base64
// to its base64.
func setBytes(m map[string]interface{}, name string, b []byte) {
	if utf8.Valid(b) {
		m[name] = string(b)
		return
	}
	m[name+"_base64"] = base64.StdEncoding.EncodeToString(b)
}

func newScanCmd(g *globals) *cobra.Command {
	var prefix, start, end string
	var limit, width int
	var full bool
	cmd := &cobra.Command{
		Use:   "scan DIR [--prefix P | --start S --end E] [--limit N] [--full]",
		Short: "List keys and values in order",
		Long: `List keys and values in order, one "KEY VALUE" line each (a key or value with
control characters, tabs or bytes that are not UTF-8 is printed Go-quoted).
Values longer than --width characters are cut unless --full. When --limit
cuts the scan, a last line on stderr names the next key to pass as --start.
With --json the output is {"pairs":[...],"more":...,"next_key":...}; binary
keys and values are base64 in key_base64/value_base64.`,
		Args: args("DIR"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if limit < 0 {
				return fmt.Errorf("%w: --limit must be at least 0", errUsage)
			}
			if width < 1 {
				return fmt.Errorf("%w: --width must be at least 1", errUsage)
			}
			if prefix != "" && (start != "" || end != "") {
				return fmt.Errorf("%w: use --prefix or --start/--end, not both", errUsage)
			}
			_, e, err := g.openReplica(a[0])
			if err != nil {
				return err
			}
			defer e.Close()
			q := sm.ScanQuery{Prefix: []byte(prefix)}
			if start != "" {
				q.Start = []byte(start)
			}
			if end != "" {
				q.End = []byte(end)
			}
			lo, hi := q.Range()
			v, err := e.NewView()
			if err != nil {
				return err
			}
			defer v.Close()
			type kv struct{ k, v []byte }
			var pairs []kv
			var next []byte
			more := false
			// One past the limit tells a cut scan from one that ended.
			fetch := 0
			if limit > 0 {
				fetch = limit + 1
			}
			err = v.Scan(lo, hi, fetch, func(k, val []byte) bool {
				if limit > 0 && len(pairs) == limit {
					more, next = true, append([]byte(nil), k...)
					return false
				}
				pairs = append(pairs, kv{append([]byte(nil), k...), append([]byte(nil), val...)})
				return true
			})
			if err != nil {
				return err
			}
			if g.json {
				// Shaped like keeld's GET /kv; a key or value that is not
				// UTF-8 is base64 in key_base64/value_base64, since a JSON
				// string cannot carry it exactly.
				out := struct {
					Pairs  []map[string]interface{} `json:"pairs"`
					More   bool                     `json:"more"`
					Next   string                   `json:"next_key,omitempty"`
					Next64 string                   `json:"next_key_base64,omitempty"`
				}{Pairs: make([]map[string]interface{}, 0, len(pairs)), More: more}
				for _, p := range pairs {
					m := map[string]interface{}{}
					setBytes(m, "key", p.k)
					setBytes(m, "value", p.v)
					out.Pairs = append(out.Pairs, m)
				}
				if more {
					if utf8.Valid(next) {
						out.Next = string(next)
					} else {
						out.Next64 = base64.StdEncoding.EncodeToString(next)
					}
				}
				return g.printJSON(out)
			}
			var b strings.Builder
			for _, p := range pairs {
				b.WriteString(printable(string(p.k)))
				b.WriteByte(' ')
				b.WriteString(cutValue(printable(string(p.v)), len(p.v), width, full))
				b.WriteByte('\n')
			}
			if _, err := fmt.Fprint(g.stdout, b.String()); err != nil {
				return err
			}
			if more {
				fmt.Fprintf(g.stderr, "-- more: --limit %d reached; continue with --start %s\n", limit, shellQuote(next))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&prefix, "prefix", "", "only keys with this prefix")
	f.StringVar(&start, "start", "", "first key (inclusive)")
	f.StringVar(&end, "end", "", "last key (exclusive)")
	f.IntVar(&limit, "limit", 100, "at most this many keys (0 for all)")
	f.IntVar(&width, "width", defaultWidth, "cut printed values at this many characters")
	f.BoolVar(&full, "full", false, "print values whole, however long")
	return cmd
}

// cutValue shortens a printed value to width characters, saying how long
// the value was.
func cutValue(s string, n, width int, full bool) string {
	if full || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return fmt.Sprintf("%s… (%d bytes, --full prints all)", string(r[:width]), n)
}

// shellQuote writes a key so it can be pasted as a flag value: bare when
// it is plain, else single-quoted; keys that are not printable UTF-8 are
// shown Go-quoted (and cannot be passed back through a flag).
func shellQuote(k []byte) string {
	s := string(k)
	if p := printable(s); p != s {
		return p
	}
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '-' || r == '_' || r == '.' || r == ':' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
