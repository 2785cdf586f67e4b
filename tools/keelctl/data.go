package main

import (
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/keel-db/keel/engine"
	"github.com/keel-db/keel/sm"
	"github.com/spf13/cobra"
)

func newGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get DIR KEY",
		Short: "Print one key's value from the replica's state (exit 1 when absent)",
		Args:  args("DIR", "KEY"),
		RunE: func(cmd *cobra.Command, a []string) error {
			_, e, err := g.openReplica(a[0])
			if err != nil {
				return err
			}
			defer e.Close()
			v, err := e.Get([]byte(a[1]))
			if errors.Is(err, engine.ErrNotFound) {
				if g.json {
					_ = g.printJSON(map[string]interface{}{"key": a[1], "found": false})
				}
				return fmt.Errorf("%w: key %q not found", errProblems, a[1])
			}
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]interface{}{"key": a[1], "found": true, "value": string(v)})
			}
			_, err = g.stdout.Write(append(v, '\n'))
			return err
		},
	}
}

func newScanCmd(g *globals) *cobra.Command {
	var prefix, start, end string
	var limit int
	cmd := &cobra.Command{
		Use:   "scan DIR [--prefix P | --start S --end E] [--limit N]",
		Short: "List keys and values in order",
		Args:  args("DIR"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if limit < 0 {
				return fmt.Errorf("%w: --limit must be at least 0", errUsage)
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
			type kv struct {
				Key   string `json:"key"`
				Value string `json:"value"`
			}
			pairs := []kv{}
			err = v.Scan(lo, hi, limit, func(k, val []byte) bool {
				pairs = append(pairs, kv{Key: string(k), Value: string(val)})
				return true
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(pairs)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "KEY\tVALUE\n")
			for _, p := range pairs {
				fmt.Fprintf(w, "%s\t%s\n", printable(p.Key), printable(p.Value))
			}
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&prefix, "prefix", "", "only keys with this prefix")
	f.StringVar(&start, "start", "", "first key (inclusive)")
	f.StringVar(&end, "end", "", "last key (exclusive)")
	f.IntVar(&limit, "limit", 100, "at most this many keys (0 for all)")
	return cmd
}

// printable quotes strings a terminal would mangle.
func printable(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\t' {
			return strconv.Quote(s)
		}
	}
	return s
}

func newHashCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "hash DIR",
		Short: "Print the StateHash of all user data and the applied index it belongs to",
		Args:  args("DIR"),
		RunE: func(cmd *cobra.Command, a []string) error {
			_, e, err := g.openReplica(a[0])
			if err != nil {
				return err
			}
			defer e.Close()
			est, _ := e.Stats(false)
			v, err := e.NewView()
			if err != nil {
				return err
			}
			defer v.Close()
			bar := g.progress(int64(est.Bytes), "hashing")
			h, err := v.Hash(func(n uint64) { _ = bar.Set64(int64(n)) })
			_ = bar.Close()
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(h)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "applied index\t%d\nkeys\t%d\nstate hash\t%s\n", h.AppliedIndex, h.Keys, h.Hash)
			return w.Flush()
		},
	}
}
