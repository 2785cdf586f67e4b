package host_test

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/keel-db/keel/host"
)

func TestRTTForShards(t *testing.T) {
	for _, c := range []struct {
		shards int
		want   uint64
	}{
		{0, host.RTTMillisecond}, {1, host.RTTMillisecond}, {100, host.RTTMillisecond},
		{200, 40}, {500, 100}, {1000, 200}, {1 << 20, host.MaxRTTMillisecond},
	} {
		if got := host.RTTForShards(c.shards); got != c.want {
			t.Errorf("RTTForShards(%d) = %d, want %d", c.shards, got, c.want)
		}
	}
}

// Options.RTTMillisecond reaches the NodeHost; zero keeps Keel's default.
func TestHostRTTOption(t *testing.T) {
	host.UseSlog(slog.New(slog.NewTextHandler(io.Discard, nil)), slog.LevelWarn)
	for _, rtt := range []uint64{0, 100} {
		dir := t.TempDir()
		h, err := host.Open(host.Options{
			NodeHostDir:    filepath.Join(dir, "raft"),
			RaftAddress:    freeAddr(),
			Keel:           host.Config{RootDir: filepath.Join(dir, "sm")},
			RTTMillisecond: rtt,
		})
		if err != nil {
			t.Fatal(err)
		}
		want := rtt
		if want == 0 {
			want = host.RTTMillisecond
		}
		if got := h.NodeHost().NodeHostConfig().RTTMillisecond; got != want {
			t.Errorf("Options.RTTMillisecond %d: NodeHost runs %d", rtt, got)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
