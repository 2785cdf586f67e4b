package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/testcluster"
	"github.com/keel-db/keel/internal/testkit/testutil"
)

// keeldProc is one keeld process for the plugin test.
type keeldProc struct {
	cmd  *exec.Cmd
	http string
	out  *bytes.Buffer
}

// TestKeeldOnPlugin runs a three-replica keeld cluster whose state machines
// come from keel.so (--sm-plugin): write, linearizable read on every
// replica, and a snapshot.
func TestKeeldOnPlugin(t *testing.T) {
	dir := builtPlugins(t)
	addrs := testcluster.FreeAddrs(t, 6)
	members := map[uint64]string{1: addrs[0], 2: addrs[1], 3: addrs[2]}
	var procs []*keeldProc
	for i := 0; i < 3; i++ {
		p := &keeldProc{http: addrs[3+i], out: &bytes.Buffer{}}
		p.cmd = exec.Command(filepath.Join(dir, "keeld"),
			"--data-dir", filepath.Join(t.TempDir(), "data"), "--http", p.http,
			"--replica-id", fmt.Sprint(i+1), "--members", host.FormatMembers(members),
			"--sm-plugin", filepath.Join(dir, "keel.so"), "--log-level", "info")
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
			if t.Failed() {
				t.Logf("keeld %s output:\n%s", p.http, p.out.String())
			}
		})
		procs = append(procs, p)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	call := func(method, url string, body string) (int, string) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Wait on the event "a write is accepted", bounded.
	testutil.Eventually(t, 60*time.Second, func() error {
		if code, body := call(http.MethodPut, "http://"+procs[0].http+"/kv/plugin", "loaded"); code != http.StatusNoContent {
			return fmt.Errorf("no write accepted: %d %s", code, body)
		}
		return nil
	})
	for _, p := range procs {
		if code, body := call(http.MethodGet, "http://"+p.http+"/kv/plugin", ""); code != http.StatusOK || body != "loaded" {
			t.Fatalf("GET on %s: %d %q", p.http, code, body)
		}
		if !strings.Contains(p.out.String(), "loaded storage plugin") {
			t.Fatalf("keeld %s did not report loading the plugin:\n%s", p.http, p.out.String())
		}
	}
	code, body := call(http.MethodPost, "http://"+procs[0].http+"/admin/snapshot", "")
	var snap struct{ Index uint64 }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &snap) != nil || snap.Index == 0 {
		t.Fatalf("snapshot: %d %s", code, body)
	}
}
