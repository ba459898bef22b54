package llama_test

import (
	"strings"
	"testing"

	"greta/gguf"
	"greta/internal/testmodels"
	"greta/model/llama"
)

// load opens and validates a model the way every command does.
func load(path string) error {
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, errs := llama.Validate(f); len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func TestHostileCorpus(t *testing.T) {
	cases := testmodels.HostileCorpus(t, t.TempDir())
	if len(cases) < 20 {
		t.Fatalf("corpus has %d files, want at least 20", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			err := load(c.Path)
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", c.WantErr)
			}
			if !strings.Contains(err.Error(), c.WantErr) {
				t.Fatalf("error %q does not contain %q", err, c.WantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func TestSharedModelsValid(t *testing.T) {
	dir := testmodels.SharedDir(t, 2)
	for _, name := range []string{"stories260K.gguf", "stories260K-Q8_0.gguf", "syn-spm-Q4_0.gguf", "syn-spm-Q4_K_M.gguf", "syn-spm-Q5_K_M.gguf", "syn-spm-Q8_0.gguf", "syn-bpe-Q4_K_M.gguf"} {
		f, err := gguf.Open(dir + "/models/" + name)
		if err != nil {
			t.Fatal(err)
		}
		c, errs := llama.Validate(f)
		if len(errs) > 0 {
			t.Errorf("%s: %v", name, errs)
		}
		// The config must equal the metadata, key by key.
		k := func(s string) int64 { v, _, _ := f.Int("llama." + s); return v }
		if int64(c.Dim) != k("embedding_length") || int64(c.NLayers) != k("block_count") || int64(c.HiddenDim) != k("feed_forward_length") ||
			int64(c.NHeads) != k("attention.head_count") || int64(c.NKVHeads) != k("attention.head_count_kv") || int64(c.ContextLength) != k("context_length") {
			t.Errorf("%s: config %+v differs from metadata", name, c)
		}
		f.Close()
	}
}
