// Package testmodels makes small GGUF files for tests: valid random-weight
// llama models and a corpus of hostile files that must each be refused with
// one clear error.
package testmodels

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"greta/gguf"
	"greta/ml"
	"greta/model/llama"
	"greta/tokenizer"
)

// Tiny is a small GQA llama shape that runs in milliseconds.
var Tiny = llama.SynthOptions{Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 128, Context: 256, RopeBase: 10000, Vocab: 300, Type: "f32", Seed: 7}

// Synth writes a model with the given options to dir/name and returns its path.
func Synth(t testing.TB, dir, name string, o llama.SynthOptions) string {
	t.Helper()
	var buf bytes.Buffer
	if err := llama.Synthesize(&buf, o); err != nil {
		t.Fatalf("synthesize %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// SynthChat writes a model with the given options and the Jinja source
// chatTemplate as its tokenizer.chat_template to dir/name and returns its
// path.
func SynthChat(t testing.TB, dir, name string, o llama.SynthOptions, chatTemplate string) string {
	t.Helper()
	kv, err := llama.SynthMetadata(o)
	if err != nil {
		t.Fatal(err)
	}
	var vocab []gguf.KV
	for _, e := range kv {
		// The family's own template, which SynthMetadata writes for all
		// but llama, gives way to chatTemplate.
		if strings.HasPrefix(e.Key, "tokenizer.") && e.Key != "tokenizer.chat_template" {
			vocab = append(vocab, e)
		}
	}
	if o.VocabFrom, err = gguf.FromMetadata(append(vocab, gguf.KV{Key: "tokenizer.chat_template", Value: chatTemplate})); err != nil {
		t.Fatal(err)
	}
	return Synth(t, dir, name, o)
}

// Load opens the model file at path and loads its weights onto b and its
// vocabulary, failing t on any error; the file stays open until t ends.
func Load(t testing.TB, path string, b ml.Backend) (*llama.Model, *tokenizer.Tokenizer) {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err := llama.Load(f, b, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}

// SharedDir returns the ../shared folder seen from a package directory
// depth levels below the repository root, or skips the test when absent.
func SharedDir(t testing.TB, depth int) string {
	t.Helper()
	up := ""
	for i := 0; i < depth; i++ {
		up += "../"
	}
	dir := filepath.Join(up+"..", "shared")
	if _, err := os.Stat(filepath.Join(dir, "models")); err != nil {
		t.Skipf("%s is absent: this test needs the shared fixtures", dir)
	}
	return dir
}
