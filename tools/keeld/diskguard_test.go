package main

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keel-db/keel/internal/testkit/testutil"
	"github.com/lni/dragonboat/v4"
)

func TestParseDiskFlags(t *testing.T) {
	for _, c := range []struct {
		arg  string
		want diskSize
	}{
		{"0", diskSize{}}, {"1048576", diskSize{bytes: 1 << 20}}, {"256MiB", diskSize{bytes: 256 << 20}},
		{"1GiB", diskSize{bytes: 1 << 30}}, {"2G", diskSize{bytes: 2 << 30}}, {"512KB", diskSize{bytes: 512 << 10}},
		{"5%", diskSize{percent: 5}}, {"0.5%", diskSize{percent: 0.5}},
	} {
		cfg, err := parseFlags([]string{"--disk-reserve", c.arg, "--disk-ballast", c.arg})
		if err != nil || cfg.DiskReserve != c.want || cfg.DiskBallast != c.want {
			t.Errorf("%q: %+v %+v %v, want %+v", c.arg, cfg.DiskReserve, cfg.DiskBallast, err, c.want)
		}
	}
	for _, bad := range []string{"", "-1", "lots", "60%", "5%%", "1.5GiB", "99999999999999999999GiB"} {
		if _, err := parseFlags([]string{"--disk-reserve", bad}); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "disk-reserve") {
			t.Errorf("--disk-reserve %q: %v, want a usage error naming the flag", bad, err)
		}
	}
	if got := (diskSize{percent: 5}).of(1000); got != 50 {
		t.Errorf("5%% of 1000 = %d", got)
	}
	if s := defaultDiskReserve.String(); s != "256MiB" {
		t.Errorf("default reserve prints as %q", s)
	}
}

// dragonboatErrors maps every error variable Dragonboat exports to the
// status keeld must answer with. TestStatusForDragonboatErrors reads
// Dragonboat's source, so a sentinel added by an upgrade fails the test
// until it is classified here.
var dragonboatErrors = map[string]struct {
	err  error
	want int
}{
	// The shard cannot serve right now: retry (503 with Retry-After).
	"ErrSystemBusy":              {dragonboat.ErrSystemBusy, 503},
	"ErrShardClosed":             {dragonboat.ErrShardClosed, 503},
	"ErrShardNotInitialized":     {dragonboat.ErrShardNotInitialized, 503},
	"ErrShardNotReady":           {dragonboat.ErrShardNotReady, 503},
	"ErrTimeout":                 {dragonboat.ErrTimeout, 503},
	"ErrClosed":                  {dragonboat.ErrClosed, 503},
	"ErrAborted":                 {dragonboat.ErrAborted, 503},
	"ErrCanceled":                {dragonboat.ErrCanceled, 503},
	"ErrShardNotFound":           {dragonboat.ErrShardNotFound, 503},
	"ErrReplicaRemoved":          {dragonboat.ErrReplicaRemoved, 503},
	"ErrLogDBNotCreatedOrClosed": {dragonboat.ErrLogDBNotCreatedOrClosed, 503},
	"ErrTimeoutTooSmall":         {dragonboat.ErrTimeoutTooSmall, 503},
	"ErrInvalidDeadline":         {dragonboat.ErrInvalidDeadline, 503},
	// The request is wrong.
	"ErrInvalidAddress": {dragonboat.ErrInvalidAddress, 400},
	"ErrInvalidTarget":  {dragonboat.ErrInvalidTarget, 400},
	"ErrPayloadTooBig":  {dragonboat.ErrPayloadTooBig, 413},
	"ErrRejected":       {dragonboat.ErrRejected, 409},
	// keeld or its host is wrong: a bug to log (500).
	"ErrInvalidSession":       {dragonboat.ErrInvalidSession, 500},
	"ErrInvalidOption":        {dragonboat.ErrInvalidOption, 500},
	"ErrInvalidOperation":     {dragonboat.ErrInvalidOperation, 500},
	"ErrDeadlineNotSet":       {dragonboat.ErrDeadlineNotSet, 500},
	"ErrShardAlreadyExist":    {dragonboat.ErrShardAlreadyExist, 500},
	"ErrShardNotStopped":      {dragonboat.ErrShardNotStopped, 500},
	"ErrInvalidShardSettings": {dragonboat.ErrInvalidShardSettings, 500},
	"ErrShardNotBootstrapped": {dragonboat.ErrShardNotBootstrapped, 500},
	"ErrDirNotExist":          {dragonboat.ErrDirNotExist, 500},
	"ErrInvalidRange":         {dragonboat.ErrInvalidRange, 500},
	"ErrNoSnapshot":           {dragonboat.ErrNoSnapshot, 500},
}

func TestStatusForDragonboatErrors(t *testing.T) {
	for name, c := range dragonboatErrors {
		// Wrapped as keeld's handlers wrap them.
		if got := statusFor(fmt.Errorf("add replica 2: %w", c.err)); got != c.want {
			t.Errorf("dragonboat.%s: %d, want %d", name, got, c.want)
		}
	}
	for _, c := range []struct {
		err  error
		want int
	}{
		{errDiskFull, 507}, {context.DeadlineExceeded, 503}, {context.Canceled, 503},
	} {
		if got := statusFor(c.err); got != c.want {
			t.Errorf("%v: %d, want %d", c.err, got, c.want)
		}
	}

	// Every exported Err* variable of Dragonboat's root package is in the
	// table above.
	out, err := exec.Command(testutil.GoTool(), "list", "-f", "{{.Dir}}", "github.com/lni/dragonboat/v4").Output()
	if err != nil {
		t.Skipf("cannot locate Dragonboat's source: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	pkgs, err := parser.ParseDir(token.NewFileSet(), dir, func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatalf("parse %s: %v", dir, err)
	}
	found := 0
	for _, p := range pkgs {
		for fname, f := range p.Files {
			for _, d := range f.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.VAR {
					continue
				}
				for _, spec := range gd.Specs {
					for _, id := range spec.(*ast.ValueSpec).Names {
						if !strings.HasPrefix(id.Name, "Err") || !id.IsExported() {
							continue
						}
						found++
						if _, ok := dragonboatErrors[id.Name]; !ok {
							t.Errorf("dragonboat.%s (%s) has no status in keeld's table: classify it in statusFor and here", id.Name, filepath.Base(fname))
						}
					}
				}
			}
		}
	}
	if found < len(dragonboatErrors) {
		t.Errorf("found %d exported errors in %s, the table has %d", found, dir, len(dragonboatErrors))
	}
}
