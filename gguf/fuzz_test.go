package gguf_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"greta/gguf"
	"greta/internal/testmodels"
	"greta/model/llama"
)

// FuzzParse feeds arbitrary bytes to the reader and the llama validator.
// Neither may panic; whatever parses must rewrite and parse back the same.
// Seeds: a tiny synthesized model, and the ../shared models (small ones
// whole, large ones cut after their header so each execution stays fast).
func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	if err := llama.Synthesize(&buf, testmodels.Tiny); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	paths, _ := filepath.Glob("../../shared/models/*.gguf")
	vocab, _ := filepath.Glob("../../shared/vocab/*.gguf")
	for _, p := range append(paths, vocab...) {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(b) > 2<<20 {
			if g, err := gguf.Parse(b); err == nil && g.DataOffset < 16<<20 {
				b = b[:min(g.DataOffset, int64(len(b)))]
			} else {
				b = b[:2<<20]
			}
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := gguf.Parse(data)
		if err != nil {
			if g != nil {
				t.Fatal("Parse returned a file and an error")
			}
			return
		}
		for i := range g.Tensors {
			_ = g.TensorData(&g.Tensors[i]) // in bounds, or it panics here
		}
		llama.Validate(g)
		var out bytes.Buffer
		if err := gguf.Rewrite(&out, g); err != nil {
			return // e.g. an array whose element type differs from its data
		}
		g2, err := gguf.Parse(out.Bytes())
		if err != nil {
			t.Fatalf("rewritten file does not parse: %v", err)
		}
		if len(g2.KV) != len(g.KV) || len(g2.Tensors) != len(g.Tensors) {
			t.Fatalf("rewrite changed counts: %d/%d kv, %d/%d tensors", len(g2.KV), len(g.KV), len(g2.Tensors), len(g.Tensors))
		}
	})
}

// TestTruncatedEverywhere cuts a valid model at every offset of its header
// and at many in its data: each must fail cleanly.
func TestTruncatedEverywhere(t *testing.T) {
	var buf bytes.Buffer
	if err := llama.Synthesize(&buf, testmodels.Tiny); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	g, err := gguf.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	last := g.Tensors[len(g.Tensors)-1]
	needed := g.DataOffset + int64(last.Offset) + last.Size()
	n := 0
	for off := 0; off < len(b); off++ {
		if int64(off) > g.DataOffset && off%97 != 0 {
			continue
		}
		_, err := gguf.Parse(b[:off])
		if err == nil && int64(off) < needed {
			t.Fatalf("truncation at %d of %d parsed without error", off, len(b))
		}
		n++
	}
	t.Logf("%d truncations refused", n)
}
