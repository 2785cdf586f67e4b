package main

import (
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/keel-db/keel/engine"
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
				out := map[string]interface{}{"key": a[1], "found": true}
				setBytes(out, "value", v)
				return g.printJSON(out)
			}
			_, err = g.stdout.Write(append(v, '\n'))
			return err
		},
	}
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
