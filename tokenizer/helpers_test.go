package tokenizer

import (
	"bytes"
	"testing"

	"greta/gguf"
)

// buildGGUF writes metadata-only GGUF bytes and parses them back.
func buildGGUF(t testing.TB, kv []gguf.KV) *gguf.File {
	t.Helper()
	var buf bytes.Buffer
	w, err := gguf.NewWriter(&buf, 3, kv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// withMetadata loads a shared GGUF, replaces (or with a nil value, drops)
// some metadata keys, and builds a tokenizer from the result.
func withMetadata(t testing.TB, rel string, set map[string]any) *Tokenizer {
	t.Helper()
	f, err := gguf.Open(sharedPath(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var kv []gguf.KV
	done := map[string]bool{}
	for _, e := range f.KV {
		if v, ok := set[e.Key]; ok {
			done[e.Key] = true
			if v == nil {
				continue
			}
			e.Value = v
		}
		kv = append(kv, e)
	}
	for k, v := range set {
		if !done[k] && v != nil {
			kv = append(kv, gguf.KV{Key: k, Value: v})
		}
	}
	tok, err := FromGGUF(buildGGUF(t, kv))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
