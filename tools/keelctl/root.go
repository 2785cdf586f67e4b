package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// globals are the flags every subcommand shares.
type globals struct {
	stdout, stderr io.Writer
	json           bool
	nodeHostDir    string
	smRoot         string
	shardID        uint64
	replicaID      uint64
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "keelctl",
		Short: "Inspect, check, export and repair a stopped Keel replica's data directory",
		Long: `keelctl works on the data directory of a stopped replica: DIR is what keeld was
given as --data-dir (Raft log in DIR/raft, state in DIR/sm). A host that embeds
Keel names its NodeHost directory and Keel's root with --nodehost-dir and
--sm-root instead. A directory held by a running process is refused. Only
export and import write anything.

Exit codes: 0 ok, 1 problems found, 2 usage error, 3 directory unusable
(missing, not Keel's, in use, unopenable), 4 other failure.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.BoolVar(&g.json, "json", false, "print JSON instead of tables")
	pf.StringVar(&g.nodeHostDir, "nodehost-dir", "", "Dragonboat NodeHost directory (default DIR/raft)")
	pf.StringVar(&g.smRoot, "sm-root", "", "Keel state root, host.Config.RootDir (default DIR/sm)")
	pf.Uint64Var(&g.shardID, "shard", 0, "shard ID, when the root holds more than one replica")
	pf.Uint64Var(&g.replicaID, "replica", 0, "replica ID, when the root holds more than one replica")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return fmt.Errorf("%w: %w", errUsage, err)
	})
	root.AddCommand(
		newInspectCmd(g),
		newGetCmd(g),
		newScanCmd(g),
		newHashCmd(g),
		newCheckCmd(g),
		newVerifyCmd(g),
		newExportCmd(g),
		newImportCmd(g),
	)
	for _, c := range root.Commands() {
		c.SilenceErrors, c.SilenceUsage = true, true
	}
	return root
}

// args checks the positional argument count, reporting a usage error.
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) != len(names) {
			return fmt.Errorf("%w: %s takes %s (got %d argument(s)); see 'keelctl %s --help'",
				errUsage, cmd.Name(), strings.Join(names, " "), len(a), cmd.Name())
		}
		return nil
	}
}

// printJSON writes v as indented JSON.
func (g *globals) printJSON(v interface{}) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progress returns a byte-count progress bar on stderr when stderr is a
// terminal, and a no-op otherwise (scripts and tests get clean output).
func (g *globals) progress(total int64, what string) *progressbar.ProgressBar {
	f, ok := g.stderr.(*os.File)
	if !ok || !(isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())) {
		return progressbar.DefaultSilent(total, what)
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
	)
}
