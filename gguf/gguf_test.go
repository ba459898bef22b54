package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// sharedModels lists the GGUF files under ../shared, skipping the test when
// the folder is absent (a fresh clone has no models).
func sharedModels(t testing.TB) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{"../../shared/models", "../../shared/vocab"} {
		m, _ := filepath.Glob(filepath.Join(dir, "*.gguf"))
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Skip("../shared is absent: no GGUF models to test against")
	}
	return files
}

func TestRoundTripByteIdentical(t *testing.T) {
	for _, path := range sharedModels(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var buf bytes.Buffer
			if err := Rewrite(&buf, f); err != nil {
				t.Fatal(err)
			}
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), orig) {
				n := min(len(orig), buf.Len())
				i := 0
				for i < n && orig[i] == buf.Bytes()[i] {
					i++
				}
				t.Fatalf("rewrite differs: %d bytes vs %d, first difference at offset %d", buf.Len(), len(orig), i)
			}
		})
	}
}
