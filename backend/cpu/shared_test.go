package cpu

import (
	"os"
	"path/filepath"
	"testing"

	"greta/gguf"
)

// openShared opens a model from ../shared/models (the project's fixtures),
// skipping the test when the folder is absent.
func openShared(t testing.TB, name string) *gguf.File {
	t.Helper()
	path := filepath.Join("../../../shared/models", name)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is absent (%v); the shared fixtures are needed for this test", path, err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
