package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/storageplugin"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
)

// soBuild builds Go plugins once per test binary, with the flags the test
// binary itself was built with (Go refuses a plugin built otherwise).
type soBuild struct {
	once sync.Once
	dir  string
	err  error
}

var plugins soBuild

// moduleRoot is the repository root (integration/ is one level down).
func moduleRoot(t testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// buildFlags are the go build flags matching this test binary.
func buildFlags() []string {
	if raceEnabled {
		return []string{"-race"}
	}
	return nil
}

func goBuild(root string, args ...string) error {
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// builtPlugins builds keel.so, a variant of it with different Keel package
// contents, and the two malformed test plugins into one temp dir.
func builtPlugins(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("building Go plugins takes minutes; skipped with -short")
	}
	plugins.once.Do(func() {
		dir, err := os.MkdirTemp("", "keel-plugins-")
		if err != nil {
			plugins.err = err
			return
		}
		plugins.dir = dir
		root := moduleRoot(t)
		flags := buildFlags()
		builds := [][]string{
			{"-buildmode=plugin", "-o", filepath.Join(dir, "keel.so"), "./storageplugin/keelso"},
			{"-buildmode=plugin", "-tags", "keel_build_variant", "-o", filepath.Join(dir, "variant.so"), "./storageplugin/keelso"},
			{"-buildmode=plugin", "-o", filepath.Join(dir, "nosymbol.so"), "./integration/testdata/plugins/nosymbol"},
			{"-buildmode=plugin", "-o", filepath.Join(dir, "badapi.so"), "./integration/testdata/plugins/badapi"},
			// keeld built with the same flags as keel.so, so it can load it.
			{"-o", filepath.Join(dir, "keeld"), "./tools/keeld"},
		}
		for _, b := range builds {
			if err := goBuild(root, append(append([]string{}, flags...), b...)...); err != nil {
				plugins.err = err
				return
			}
		}
	})
	if plugins.err != nil {
		t.Fatal(plugins.err)
	}
	return plugins.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if plugins.dir != "" {
		_ = os.RemoveAll(plugins.dir)
	}
	os.Exit(code)
}

// TestPluginLoadErrors checks that every way a plugin can be wrong gives a
// classified error naming the file, never a panic.
func TestPluginLoadErrors(t *testing.T) {
	dir := builtPlugins(t)
	notPlugin := filepath.Join(t.TempDir(), "text.so")
	if err := os.WriteFile(notPlugin, []byte("this is not an ELF file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want error
		text string
	}{
		{"missing file", filepath.Join(dir, "missing.so"), storageplugin.ErrPluginNotFound, "missing.so"},
		{"directory", dir, storageplugin.ErrPluginNotFound, "is a directory"},
		{"not a plugin", notPlugin, storageplugin.ErrNotAPlugin, "text.so"},
		{"wrong symbol", filepath.Join(dir, "nosymbol.so"), storageplugin.ErrPluginSymbol, "KeelPlugin"},
		{"api version", filepath.Join(dir, "badapi.so"), storageplugin.ErrPluginAPIVersion, "999"},
		{"different package versions", filepath.Join(dir, "variant.so"), storageplugin.ErrPluginBuildMismatch, "same Go toolchain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := storageplugin.Load(tc.path)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want error %v", tc.path, d, tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Load(%s) error = %v, want %v", tc.path, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q should name %s and mention %q", err, tc.path, tc.text)
			}
		})
	}
}

// TestPluginCluster loads keel.so in-process and runs a three-replica shard
// on the plugin's factory: write, linearizable read, and a snapshot request.
func TestPluginCluster(t *testing.T) {
	dir := builtPlugins(t)
	desc, err := storageplugin.Load(filepath.Join(dir, "keel.so"))
	if err != nil {
		t.Fatal(err)
	}
	if desc.KeelVersion != host.Version {
		t.Fatalf("plugin Keel version %q, host %q", desc.KeelVersion, host.Version)
	}
	testcluster.Quiet()
	addrs := testcluster.FreeAddrs(t, 3)
	members := map[uint64]dragonboat.Target{1: addrs[0], 2: addrs[1], 3: addrs[2]}
	root := t.TempDir()
	var hosts []*dragonboat.NodeHost
	for i := uint64(1); i <= 3; i++ {
		nh, err := dragonboat.NewNodeHost(config.NodeHostConfig{
			NodeHostDir:    filepath.Join(root, fmt.Sprint(i), "raft"),
			RTTMillisecond: 5,
			RaftAddress:    addrs[i-1],
			Expert:         config.ExpertConfig{LogDB: host.LogDBConfig()},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nh.Close)
		hosts = append(hosts, nh)
		cfgJSON := fmt.Sprintf(`{"root_dir": %q}`, filepath.Join(root, fmt.Sprint(i), "sm"))
		create, err := desc.NewFromJSON([]byte(cfgJSON))
		if err != nil {
			t.Fatal(err)
		}
		if err := nh.StartOnDiskReplica(members, false, create, host.ShardConfig(1, i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := client.NewClient(hosts[0], 1)
	for i := 0; i < 100; i++ {
		k, v := []byte(fmt.Sprintf("k%03d", i)), []byte(fmt.Sprintf("v%d", i))
		if err := testcluster.Retry(ctx, func(ctx context.Context) error { return c.Put(ctx, k, v) }); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	for _, nh := range hosts {
		var v []byte
		var found bool
		err := testcluster.Retry(ctx, func(ctx context.Context) error {
			var err error
			v, found, err = client.NewClient(nh, 1).Get(ctx, []byte("k099"))
			return err
		})
		if err != nil || !found || string(v) != "v99" {
			t.Fatalf("get on %s: %q %v %v", nh.RaftAddress(), v, found, err)
		}
	}
	var idx uint64
	err = testcluster.Retry(ctx, func(ctx context.Context) error {
		var err error
		idx, err = hosts[0].SyncRequestSnapshot(ctx, 1, dragonboat.DefaultSnapshotOption)
		return err
	})
	if err != nil || idx == 0 {
		t.Fatalf("snapshot: index %d, %v", idx, err)
	}
}
