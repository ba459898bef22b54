package cpu

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestAsmgenUpToDate: the generated assembly must be what asmgen writes
// now (edit asmgen, then go generate ./backend/cpu).
func TestAsmgenUpToDate(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	dir := t.TempDir()
	if out, err := exec.Command(gobin, "run", "./asmgen", dir).CombinedOutput(); err != nil {
		t.Fatalf("go run ./asmgen: %v\n%s", err, out)
	}
	for _, name := range []string{"gemm_vnni_amd64.s", "attention_amd64.s", "matvec_vnni_v_amd64.s"} {
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from asmgen's output: run go generate ./backend/cpu", name)
		}
	}
}
