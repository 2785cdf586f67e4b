package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/keel-db/keel/internal/testkit/testutil"
)

// Binaries built once by TestMain.
var keeldBin, keelctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keel-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	keeldBin = filepath.Join(dir, "keeld")
	keelctlBin = filepath.Join(dir, "keelctl")
	for bin, pkg := range map[string]string{keeldBin: "github.com/keel-db/keel/tools/keeld", keelctlBin: "github.com/keel-db/keel/tools/keelctl"} {
		out, err := exec.Command(testutil.GoTool(), "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
